"""`lab record` installs a SIGTERM handler for its run only. Called in-process (the kernel tests
do), a handler left behind was inherited by every process forked later — the parallel summary's
workers then ignored terminate() and a failing test hung CI."""

import signal

from ruletrace.cli import main


def test_lab_record_leaves_the_sigterm_handler_as_it_found_it(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["lab", "record", "no-such-scenario", str(tmp_path / "x")]) != 0
    capsys.readouterr()
    assert signal.getsignal(signal.SIGTERM) is before
