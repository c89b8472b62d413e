"""Ruleset readers: each module reads one listing format and returns a Ruleset."""
