"""`report -o FILE` never makes things worse: no writes through links, over inputs, over foreign
files, and a failed write leaves the old file as it was (cli/safe_write.py)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from report_cases import LOG, RULES

from ruletrace.cli import main
from ruletrace.cli.status import ExitStatus

OLD_REPORT = '<!doctype html>\n<html><head><meta name="generator" content="ruletrace 0.0.1">\n<p>old</p>\n'


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    # "read FILE as FORMAT" comes first where a trace was read; then the error, one line
    lines = [ln for ln in err.strip().splitlines() if not (ln.startswith("ruletrace: read ") and " as " in ln)]
    assert len(lines) == 1 and lines[0].startswith("ruletrace: error: "), err
    return lines[0]


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_symlink_target_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "shadow"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    link = tmp_path / "report.html"
    link.symlink_to(victim)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(link))
    assert code == ExitStatus.ERROR
    assert "symbolic link" in one_error_line(err) and str(link) in err
    assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert link.is_symlink()
    # --force does not make it follow the link either
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(link), "--force")
    assert code == ExitStatus.ERROR and victim.read_text() == "secret\n"


def test_link_planted_after_the_check_is_replaced_not_followed(tmp_path, monkeypatch):
    from ruletrace.cli import safe_write

    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    link = tmp_path / "out.html"
    link.symlink_to(victim)
    monkeypatch.setattr(safe_write, "check_target", lambda *a, **k: None)  # the race: checked before the link
    safe_write.write_output(str(link), "<p>new</p>")
    assert victim.read_text() == "secret\n"
    assert not link.is_symlink() and link.read_text() == "<p>new</p>"


@pytest.mark.parametrize("which", ["trace", "ruleset", "from-json", "hard link to the trace"])
def test_output_equal_to_an_input_is_refused(tmp_path, capsys, which):
    log, rules = tmp_path / "trace.log", tmp_path / "rules.v4"
    shutil.copy(LOG, log)
    shutil.copy(RULES, rules)
    doc = tmp_path / "out.json"
    assert main(["explain", "-r", str(rules), str(log), "--json"]) == 0
    doc.write_text(capsys.readouterr().out)
    args = ["report", "-r", str(rules)]
    if which == "from-json":
        target = doc
        args += ["--from-json", str(doc)]
    else:
        args += [str(log)]
        target = {"trace": log, "ruleset": rules}.get(which)
        if target is None:
            target = tmp_path / "alias.html"
            os.link(log, target)
    before = {p: p.read_bytes() for p in (log, rules, doc)}
    code, _, err = run(capsys, *args, "-o", str(target))  # checked before "not a report"
    assert code == ExitStatus.ERROR
    assert "over an input file" in one_error_line(err)
    assert {p: p.read_bytes() for p in (log, rules, doc)} == before
    assert leftovers(tmp_path) == []


def test_foreign_file_needs_force_and_a_report_is_replaced_keeping_its_mode(tmp_path, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("my notes\n")
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(notes))
    assert code == ExitStatus.ERROR
    assert "not written by ruletrace" in one_error_line(err) and "--force" in err
    assert notes.read_text() == "my notes\n"
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(notes), "--force")
    assert code == ExitStatus.OK, err
    assert '<meta name="generator" content="ruletrace' in notes.read_text()

    old = tmp_path / "r.html"
    old.write_text(OLD_REPORT)
    old.chmod(0o600)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(old))
    assert code == ExitStatus.OK, err
    assert "<p>old</p>" not in old.read_text() and "KUBE-FIREWALL" in old.read_text()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_new_report_is_0644_and_the_umask_is_honoured(tmp_path, capsys):
    was = os.umask(0o022)
    try:
        code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(tmp_path / "a.html"))
        os.umask(0o077)
        code2, _, _ = run(capsys, "report", "-r", RULES, LOG, "-o", str(tmp_path / "b.html"))
    finally:
        os.umask(was)
    assert code == code2 == ExitStatus.OK, err
    assert stat.S_IMODE((tmp_path / "a.html").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.html").stat().st_mode) == 0o600


def test_directories_and_fifos_are_refused_dev_null_is_fine(tmp_path, capsys):
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(tmp_path))
    assert code == ExitStatus.ERROR and "is a directory" in one_error_line(err)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(fifo))
    assert code == ExitStatus.ERROR and "not a regular file" in one_error_line(err)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", os.devnull)
    assert code == ExitStatus.OK, err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_refusal_comes_before_the_work(tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes.html"
    notes.write_text("my notes\n")
    from ruletrace.render import html

    def boom(*a, **k):
        raise AssertionError("the report was built although the target is refused")

    monkeypatch.setattr(html.ReportBuilder, "render", boom)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(notes))
    assert code == ExitStatus.ERROR and "not written by ruletrace" in err


def test_failed_write_leaves_the_old_report_and_no_temp(tmp_path, capsys, monkeypatch):
    old = tmp_path / "r.html"
    old.write_text(OLD_REPORT)
    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 1000:  # the report, not pytest's own small writes
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    code, _, err = run(capsys, "report", "-r", RULES, LOG, "-o", str(old))
    monkeypatch.undo()
    assert code == ExitStatus.ERROR
    line = one_error_line(err)
    assert str(old) in line and "No space left on device" in line and "unchanged" in line
    assert old.read_text() == OLD_REPORT
    assert leftovers(tmp_path) == []


@pytest.mark.kernel
def test_full_disk_for_real_on_a_tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs in a mount namespace of its own: the 80 KiB report does not fit."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    old = tmp_path / "old.html"
    old.write_text(OLD_REPORT)
    script = (
        'set -e; mount -t tmpfs -o size=64k tmpfs "$D"; cp "$OLD" "$D/r.html"; '
        'set +e; "$PY" -m ruletrace report -r "$RULES" "$LOG" -o "$D/r.html" 2>"$D/../err"; echo "rc=$?"; '
        'cat "$D/r.html"; echo "--"; ls -a "$D"'
    )
    env = {**os.environ, "D": str(disk), "OLD": str(old), "PY": sys.executable, "RULES": RULES, "LOG": LOG}
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=120,
                       check=False)
    if p.returncode != 0 and "rc=" not in p.stdout:
        pytest.skip(f"cannot mount a tmpfs in a new mount namespace: {p.stderr.strip()}")
    head, _, listing = p.stdout.partition("rc=")[2].partition("\n")[2].partition("--\n")
    assert p.stdout.partition("rc=")[2].startswith("2\n"), p.stdout
    assert head == OLD_REPORT  # the old report, whole
    assert sorted(listing.split()) == [".", "..", "r.html"]  # the temporary file is gone
    err = (tmp_path / "err").read_text()
    assert "No space left on device" in one_error_line(err)
