"""Shared helpers: weight files, run records."""
