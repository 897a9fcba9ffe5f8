"""Every artifact checked where it is read: the sha256 of what a job writes, recorded beside it, verified first.

The digest travels with what it vouches for (a copy, `dvc pull`), and Snakemake,
which deletes a failed job's declared outputs, deletes both together:

- a folder (a run, a feature cache, resume checkpoints) holds SHA256SUMS in
  `sha256sum`'s own format, one line per file below it (`cd RUN && sha256sum
  -c SHA256SUMS` checks it by hand);
- a JSON file (metrics) holds its own digest under "sha256": of the object
  without that key, serialised canonically (sorted keys, no spaces), so
  layout does not matter.

A job that reads one calls `verify(folder, names)` or `read_json(path)` before
using it. A mismatch, a missing digest or a missing SHA256SUMS is one
VitpeftError naming the file, what was expected and the fix: nothing is ever
read as if it were whole, and no result is computed from a corrupt artifact.
Keys and paths of outputs do not change: SHA256SUMS lives inside folders
that already were outputs, the digest inside files that already were.
"""

import hashlib
import json
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, write_json as write_plain_json

MANIFEST = "SHA256SUMS"
JSON_KEY = "sha256"
FIX = "delete {target} and rerun the job that writes it (snakemake does), or `dvc pull` it again if it came from there"


class Corrupt(VitpeftError):
    """An artifact whose bytes are not those recorded when it was written."""


def file_sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- folders: SHA256SUMS


def seal(folder) -> None:
    """Record every file below `folder` in its SHA256SUMS: for a folder written whole, before it moves into place."""
    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    _write(folder, {name: file_sha256(folder / name) for name in files})


def record(folder, name: str, digest: str | None) -> None:
    """Set (or, with None, drop) the digest of `name` in `folder`'s SHA256SUMS, rewritten atomically.

    For folders whose files come and go (resume checkpoints): record a file's
    digest before the file takes its name, so a kill in between leaves a name
    whose file is missing, never a file whose recorded digest is another's.
    """
    sums = recorded(folder)
    if digest is None:
        sums.pop(name, None)
    else:
        sums[name] = digest
    _write(Path(folder), sums)


def recorded(folder) -> dict:
    """{relative path: sha256} from `folder`'s SHA256SUMS; {} without one."""
    try:
        text = (Path(folder) / MANIFEST).read_text()
    except FileNotFoundError:
        return {}
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def verify(folder, names, fix: str | None = None) -> None:
    """Check each of `names` (paths relative to `folder`) against `folder`/SHA256SUMS; Corrupt names the first bad one.

    `fix` says what to do about it; by default: delete the folder and rerun, or pull it again.
    """
    if not names:
        return
    folder = Path(folder)
    fix = _fix(folder, fix)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise Corrupt(f"{folder} has no {MANIFEST} to check {', '.join(names)} against: it was not written whole "
                      f"by this vitpeft (or by one from before digests were recorded){fix}")
    sums = recorded(folder)
    for name in names:
        path = folder / name
        if name not in sums:
            raise Corrupt(f"{manifest} records no sha256 for {name}{fix}")
        if not path.is_file():
            continue  # missing, not corrupt: the reader says what is missing in its own words
        found = file_sha256(path)
        if found != sums[name]:
            raise Corrupt(f"{path} is corrupt: its sha256 is {found}, {manifest} records {sums[name]}{fix}")


def _fix(target, fix: str | None) -> str:
    fix = FIX.format(target=target) if fix is None else fix
    return f"; {fix}" if fix else ""


def _write(folder: Path, sums: dict) -> None:
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums)))


# ---------------------------------------------------------------- JSON files: the digest inside


def write_json(path, obj: dict) -> None:
    """Write `obj` atomically with its own digest under "sha256"."""
    if JSON_KEY in obj:
        raise ValueError(f"{JSON_KEY!r} is the digest's key; the object must not have it")
    write_plain_json(path, {**obj, JSON_KEY: _canonical_sha256(obj)})


def read_json(path, fix: str | None = None) -> dict:
    """The object a write_json wrote, once its digest matches (without the digest); Corrupt otherwise.

    A missing file raises FileNotFoundError, for the reader to name in its own words.
    """
    return parse_json(Path(path).read_bytes(), path, fix)


def parse_json(data: bytes, path, fix: str | None = None) -> dict:
    """read_json on bytes already read from `path` (a reader that also keeps their own digest)."""
    fix = _fix(path, fix)
    try:
        obj = json.loads(data)
    except ValueError as error:
        raise Corrupt(f"{path} is corrupt: not valid JSON ({error}){fix}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(JSON_KEY), str):
        raise Corrupt(f"{path} holds no {JSON_KEY!r} of its content: it was not written by this vitpeft "
                      f"(or by one from before digests were recorded){fix}")
    expected = obj.pop(JSON_KEY)
    found = _canonical_sha256(obj)
    if found != expected:
        raise Corrupt(f"{path} is corrupt: the sha256 of its content is {found}, it records {expected}{fix}")
    return obj


def _canonical_sha256(obj: dict) -> str:
    return bytes_sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
