"""Shared helpers: atomic writes, weight files, run records, profiling."""

from . import bundle, io, profiling, run_record, weights
