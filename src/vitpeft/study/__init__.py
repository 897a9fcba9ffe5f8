"""Planning: everything from a config file to the keyed jobs, torch-free.

config (load and check a study), schema (config.schema.yaml), spec (one run's
settings and hash), plan (every job, keyed), paths (names to paths), preflight
(writable and free-disk checks), signal_lead (SLURM's warning signal). The
Snakefile imports this stage while planning, so it may import the torch-free
tables below it (vitpeft.methods.arguments, vitpeft.models.presets,
vitpeft.data.catalogue, vitpeft.data.imagenet) and the shared modules
(errors, fileio, progress), never torch, timm or peft (import-linter checks).
"""
