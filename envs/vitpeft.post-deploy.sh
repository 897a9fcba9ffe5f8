#!/usr/bin/env bash
# Snakemake runs this once, inside the new env, from the working directory
# (the repository root): install vitpeft itself; its dependencies are pinned
# in vitpeft.yaml already.
set -euo pipefail
pip install --no-deps .
