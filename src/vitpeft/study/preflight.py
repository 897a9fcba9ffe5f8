"""Checks before expensive work: can we write where we will write, and is there room for it.

A training run, a data preparation or a feature cache that learns only at its
end that its folder is read-only or its disk full has wasted all its work, so
each checks first. The checks create nothing that outlives them (one probe
file, removed at once): a job that cannot finish leaves no trace. Writes that
fail later anyway (the disk filled up meanwhile) are worded by
fileio.explained_os_errors, in the same terms.

Root ignores permission bits, so writability is tried, never read from modes.
"""

import os
import shutil
import tempfile
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import WRITE_REFUSALS
from vitpeft.fileio import _nearest_existing as nearest_existing
from vitpeft.fileio import _size as size


def writable(folder, what: str = "output") -> None:
    """Refuse unless files can be created in `folder`, or `folder` itself where it will be made if it does not exist."""
    folder = Path(folder)
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise VitpeftError(f"cannot write {what} to {folder}: {existing} is a file, not a folder; choose another path")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".vitpeft-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        cause, fix = WRITE_REFUSALS.get(error.errno, (error.strerror, "choose another folder"))
        raise VitpeftError(f"cannot write {what} to {folder}: {cause}; {fix}") from None


def free_space(folder, needed_bytes: int, what: str = "output") -> int:
    """Refuse unless the disk holding `folder` has `needed_bytes` free; return the free bytes."""
    return _enough(Path(folder), needed_bytes, f"{what} in {folder}")


def room_for(needs: list) -> None:
    """free_space for several (folder, bytes, what) at once: needs on the same disk are added up."""
    by_disk: dict[int, list] = {}
    for folder, needed, what in needs:
        by_disk.setdefault(nearest_existing(Path(folder)).stat().st_dev, []).append((Path(folder), needed, what))
    for same_disk in by_disk.values():
        described = " and ".join(f"{what} in {folder}" for folder, _, what in same_disk)
        _enough(same_disk[0][0], sum(needed for _, needed, _ in same_disk), described)


def _enough(folder: Path, needed_bytes: int, described: str) -> int:
    free = shutil.disk_usage(nearest_existing(folder)).free  # what an unprivileged writer may use
    if free < needed_bytes:
        raise VitpeftError(
            f"not enough disk space for {described}: needs about {size(needed_bytes)}, only {size(free)} free; "
            "free some space there or choose a folder on another disk"
        )
    return free
