"""Report: the study's table, plots and provenance, read from the metrics files.

tables (the table, per-seed rows, the curve and its 10-step claim), plots
(tradeoff.png, curve.png), provenance (what made the report). Torch-free;
imports vitpeft.study (config, plan) and the shared modules, no model code.
"""
