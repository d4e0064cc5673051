"""Shared helpers: weight files, run records."""

from . import run_record, weights
