"""Correlation: trace events -> packets."""
