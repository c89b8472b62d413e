"""Writing an output file (``report -o FILE``) without ever making things worse than they were.

Every file the command line writes goes through ``write_output``:

- the data goes to a new temporary file in the target's directory (``O_CREAT|O_EXCL|O_NOFOLLOW``),
  is flushed to disk, and is renamed over the target; a failure (a full disk, a quota) removes the
  temporary file and leaves the old target as it was;
- a target that is a symbolic link is refused (a link planted in a shared directory must not make
  the command write elsewhere); the rename replaces a name, it never writes through one;
- a target that is one of the command's inputs (same device and inode) is refused;
- an existing regular file that the command did not write itself (``is_ours`` looks at its first
  bytes) is kept unless ``force`` is given; a directory or a device is never replaced
  (``/dev/null`` is written to as it is);
- the new file gets the old file's permission bits, or 0644 (less what the umask takes away).

Errors are ``RuletraceError`` with the target as origin: one line, exit status 2.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable

from ..errors import RuletraceError
from ..model import Origin

HEAD_BYTES = 4096  # how much of an existing file ``is_ours`` is shown
NEW_MODE = 0o644


def check_target(path: str, *, inputs: Iterable[str] = (), is_ours: Callable[[bytes], bool] | None = None,
                 force: bool = False, what: str = "the output") -> os.stat_result | None:
    """Refuse a target that ``write_output`` would refuse; the target's lstat, None when it is absent.

    Called before the (possibly long) work, so that a refusal comes at once; ``write_output``
    checks again just before it writes.
    """
    where = Origin(path)
    if path == "" or path.endswith(os.sep):
        raise RuletraceError(f"cannot write {what}: not a file name", origin=where)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise RuletraceError(f"cannot write {what}: {e.strerror}", origin=where) from e
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise RuletraceError(f"refusing to write {what}: the target is a symbolic link "
                                 "(give the real path)", origin=where)
        if stat.S_ISDIR(st.st_mode):
            raise RuletraceError(f"cannot write {what}: the target is a directory", origin=where)
        if not stat.S_ISREG(st.st_mode) and not _is_devnull(st):
            raise RuletraceError(f"refusing to write {what}: the target is not a regular file "
                                 "(use - for standard output)", origin=where)
    _check_not_input(path, st, inputs, what)
    # an empty file holds nothing to lose
    foreign = (st is not None and stat.S_ISREG(st.st_mode) and st.st_size and not force and is_ours is not None
               and not is_ours(_head(path)))
    if foreign:
        raise RuletraceError(f"refusing to overwrite {what}: the file exists and was not written by "
                             "ruletrace (give --force to replace it)", origin=where)
    return st


def write_output(path: str, data: str | bytes, *, inputs: Iterable[str] = (),
                 is_ours: Callable[[bytes], bool] | None = None, force: bool = False,
                 what: str = "the output") -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` by a rename from a temporary file."""
    inputs = list(inputs)
    st = check_target(path, inputs=inputs, is_ours=is_ours, force=force, what=what)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if st is not None and _is_devnull(st):
        return
    where = Origin(path)
    parent = os.path.dirname(path) or "."
    name = os.path.basename(path)
    try:
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise RuletraceError(f"cannot write {what}: {e.strerror} (directory {parent})", origin=where) from e
    try:
        _write_in(dfd, name, raw, st, where, what)
    finally:
        os.close(dfd)


def _write_in(dfd: int, name: str, raw: bytes, st: os.stat_result | None, where: Origin, what: str) -> None:
    mode = stat.S_IMODE(st.st_mode) & 0o777 if st is not None else None
    tmp = _create_temp(dfd, name, where, what)
    fd, tmp_name = tmp
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        # the target may have changed since check_target: a link planted now is replaced, not followed
        os.rename(tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        try:
            os.unlink(tmp_name, dir_fd=dfd)
        except OSError:
            pass
        raise RuletraceError(f"cannot write {what}: {e.strerror or e}; the old file, if any, is unchanged",
                             origin=where) from e
    except BaseException:
        try:
            os.unlink(tmp_name, dir_fd=dfd)
        except OSError:
            pass
        raise


def _create_temp(dfd: int, name: str, where: Origin, what: str) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(20):
        tmp_name = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp_name, flags, NEW_MODE, dir_fd=dfd), tmp_name
        except FileExistsError:
            continue
        except OSError as e:
            raise RuletraceError(f"cannot write {what}: {e.strerror}", origin=where) from e
    raise RuletraceError(f"cannot write {what}: no free temporary name", origin=where)


def _check_not_input(path: str, st: os.stat_result | None, inputs: Iterable[str], what: str) -> None:
    if st is None:
        return
    for inp in inputs:
        if not inp or inp == "-":
            continue
        try:
            ist = os.stat(inp)
        except OSError:
            continue
        if (ist.st_dev, ist.st_ino) == (st.st_dev, st.st_ino) and not _is_devnull(st):
            raise RuletraceError(f"refusing to write {what} over an input file ({inp})", origin=Origin(path))


def _is_devnull(st: os.stat_result) -> bool:
    try:
        dn = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and (st.st_dev, st.st_ino) == (dn.st_dev, dn.st_ino)


def _head(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return b""
        raise RuletraceError(f"cannot read the existing file: {e.strerror}", origin=Origin(path)) from e
    try:
        return os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)


def marker_check(marker: bytes) -> Callable[[bytes], bool]:
    """An ``is_ours`` that looks for ``marker`` in the first bytes of the file."""
    return lambda head: marker in head


__all__ = ["HEAD_BYTES", "NEW_MODE", "check_target", "marker_check", "write_output"]
