"""Which code made a result: the package's version, the git commit of its checkout, and whether its files differ.

Two results with the same keys and different digits are told apart by this
record (every metrics JSON, run summary and report provenance carries it). Read
once per process: the code a process runs is the code it loaded.
"""

import functools
import subprocess
from pathlib import Path

import vitpeft

PACKAGE = Path(__file__).resolve().parent


@functools.cache
def describe() -> dict:
    """{"vitpeft": version, "commit": 40 hex digits or None, "modified": bool or None} (None: not a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    # The package's own files (src/vitpeft), tracked or not, against that commit: what computes the numbers.
    status = _git("status", "--porcelain", "--untracked-files=all", "--", ".") if commit else None
    return {"vitpeft": vitpeft.__version__, "commit": commit, "modified": None if status is None else status != ""}


def _git(*args) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def words(record: dict | None) -> str:
    """A code record in words: 'vitpeft 0.1.0 at commit 1234567890ab (modified)'."""
    if not record:
        return "unrecorded code"
    commit = record.get("commit")
    where = f"at commit {commit[:12]}" + (" (modified)" if record.get("modified") else "") if commit \
        else "outside a git checkout"  # fmt: skip
    return f"vitpeft {record.get('vitpeft') or '?'} {where}"
