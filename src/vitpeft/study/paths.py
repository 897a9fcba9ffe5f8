"""Paths built from names in a config: proven to stay inside their folder.

Every path the workflow derives from a study, dataset or experiment name goes
through `inside`, so no name ("..", "/etc", "a/../../b") can point a job, or
Snakemake's clean-up of a job's outputs, at anything outside its folder.
"""

from pathlib import PurePosixPath

from vitpeft.errors import VitpeftError


def inside(base: str, *names: str) -> str:
    """`base`/names..., refusing any name that is empty, absolute, has a separator, or is '.' or '..'."""
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise VitpeftError(f"{name!r} cannot name a folder inside {base!r}")
    # One path component each, never "." or "..": the joined path cannot leave `base`.
    return str(PurePosixPath(base, *names))
