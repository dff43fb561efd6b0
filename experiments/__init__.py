"""Reproducible experiments: ``python -m experiments.<name> [--quick]``.

Each writes its numbers (JSON) and figures (PNG) under ``experiments/out/``
and prints a table; full runs also copy their figures to
``experiments/figures/``. See ``experiments/RESULTS.md``.
"""
