"""Counters a source reader fills while it reads: for summaries, warnings and progress bars."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SKIPPED_LINES = 10  # how many skipped line numbers are kept for the warning
MAX_LOG_PREFIXES = 100  # distinct LOG prefixes tallied; later new ones go to "…"


@dataclass(slots=True)
class ReadStats:
    """What one reader saw: line and event counts, skipped lines, LOG lines and bytes read."""

    lines: int = 0  # physical lines read (or records, for binary sources)
    events: int = 0  # TraceEvents yielded
    skipped: int = 0  # TRACE-looking lines that could not be parsed (truncated, damaged tag, …)
    skipped_lines: list[int] = field(default_factory=list)  # the first MAX_SKIPPED_LINES of them
    cut: int = 0  # TRACE records cut short, kept with the fields before the cut (issue 12)
    cut_lines: list[int] = field(default_factory=list)  # the first MAX_SKIPPED_LINES of them
    log_lines: int = 0  # packet lines of the LOG target (IN=/OUT= fields, no TRACE tag): not events
    log_prefixes: dict[str, int] = field(default_factory=dict)  # LOG prefix -> lines
    bytes_read: int = 0  # bytes consumed from the stream (after decompression), for progress bars
    warnings: list[str] = field(default_factory=list)  # input cut short, limits: one line each

    def skip(self, line: int | None) -> None:
        """Count one skipped record and remember where it was, while there is room."""
        self.skipped += 1
        if line is not None and len(self.skipped_lines) < MAX_SKIPPED_LINES:
            self.skipped_lines.append(line)

    def cut_short(self, line: int | None) -> None:
        """Count one record kept although its text was cut short."""
        self.cut += 1
        if line is not None and len(self.cut_lines) < MAX_SKIPPED_LINES:
            self.cut_lines.append(line)

    def cut_warning(self) -> None:
        """Say once which records lost fields (added to ``warnings`` when there are any)."""
        if self.cut:
            where = ", ".join(map(str, self.cut_lines)) + (", …" if self.cut > len(self.cut_lines) else "")
            self.warnings.append(f"{self.cut} TRACE line(s) cut short (line {where}): their steps are kept, "
                                 "the fields after the cut are unknown")

    def log_line(self, prefix: str) -> None:
        """Count one LOG-target line under its prefix."""
        self.log_lines += 1
        p = self.log_prefixes
        if prefix in p:
            p[prefix] += 1
        elif len(p) < MAX_LOG_PREFIXES:
            p[prefix] = 1
        else:
            p["…"] = p.get("…", 0) + 1
