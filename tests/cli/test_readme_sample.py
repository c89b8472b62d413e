"""README.md's sample tree is the tool's real output (elided only where it says "…"): README,
CI and reality must not drift (the sample had lost the owner in the header and the ranked why)."""

from __future__ import annotations

from pathlib import Path

from ruletrace.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_sample_is_real_output(capsys):
    text = README.read_text()
    start = text.index("packet 1  TCP 172.28.129.2:40000")
    sample = text[start:text.index("```", start)].splitlines()
    assert main(["explain", "--example", "k8s-nodeport", "--packet", "1", "--width", "140"]) == 0
    real = capsys.readouterr().out.splitlines()
    # each run of sample lines between "…" lines is a run of consecutive real lines, in order
    parts: list[list[str]] = [[]]
    for ln in sample:
        if ln.strip() == "…":
            parts.append([])
        else:
            parts[-1].append(ln)
    assert len(parts) >= 2 and all(parts)
    at = 0
    for lines in parts:
        while at < len(real) and real[at] != lines[0]:
            at += 1
        assert real[at:at + len(lines)] == lines, (lines, real[at:at + len(lines)])
        at += len(lines)
