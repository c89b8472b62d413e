"""Trace sources: each module reads one format and yields TraceEvents."""
