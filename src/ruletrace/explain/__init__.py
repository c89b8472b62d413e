"""Explanation: packets + ruleset -> explained paths."""
