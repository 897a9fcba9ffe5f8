"""Atomic writes: a file or folder appears complete or not at all; refused writes explained in one line."""

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

from vitpeft.errors import VitpeftError

TEMP_MARK = ".tmp-"  # temporaries are named .{name}.tmp-{pid of the writer}

# The OS refusing a write, worded for the user: (cause, fix).
WRITE_REFUSALS = {
    errno.ENOSPC: ("the disk is full", "free some space there or write elsewhere"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space there or write elsewhere"),
    errno.EACCES: ("permission denied", "write to a folder you may write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "write to a folder you may write to, or fix its permissions"),
    errno.EROFS: ("the file system is read-only", "write elsewhere"),
    errno.ENOTDIR: (None, "choose another path"),  # cause: names the file in the way
    errno.EEXIST: (None, "choose another path"),  # mkdir of a folder where a file is
}


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Works for files and folders. A failure (or Ctrl-C) removes the temporary
    and leaves any previous `path` untouched. A writer killed outright (kill -9,
    a node lost) cannot clean up: its temporary is removed by the next atomic
    write of the same path, once no process with its pid is alive here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            _remove(path)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove_stale_temps(path: Path) -> None:
    """Remove temporaries of `path` whose writer has died.

    Liveness is judged on this machine: on a shared file system another node's
    live writer looks dead. Its write then fails cleanly (its temporary is gone
    when it moves it into place), never half-written; Snakemake's lock on the
    working folder keeps two runs from writing the same output anyway.
    """
    prefix = f".{path.name}{TEMP_MARK}"
    for sibling in path.parent.iterdir():
        pid = sibling.name[len(prefix):] if sibling.name.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another process may be cleaning it too
                _remove(sibling)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def explained_os_errors(path):
    """Turn the OS refusing to write `path` into one VitpeftError: the path, the cause, the free space, the fix.

    Wrap any block that writes `path`; put it outside `atomic_path`, so the
    temporary is gone before the free space is measured:

        with explained_os_errors(out), atomic_path(out) as tmp:
            ...

    A full disk, an exceeded quota, a read-only file system, a denied
    permission or a file where a folder should be (errnos in WRITE_REFUSALS)
    reads e.g. "cannot write data/x.bin: the disk is full (1.0 MiB free on
    data); free some space there or write elsewhere". Every other OSError
    passes through unchanged. Only wrap writing: a refused read inside the
    block would be reported as a refused write of `path`.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_REFUSALS:
            raise
        cause, fix = WRITE_REFUSALS[error.errno]
        if error.errno in (errno.ENOTDIR, errno.EEXIST):
            blocker = _nearest_existing(Path(path).parent)
            if blocker.is_dir():
                raise  # no file in the way: some other clash, not explained here
            cause = f"{blocker} is a file, not a folder"
        existing = _nearest_existing(Path(path))
        free = _size(shutil.disk_usage(existing).free)
        raise VitpeftError(f"cannot write {path}: {cause} ({free} free on {existing}); {fix}") from None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _size(n_bytes: int) -> str:
    size, unit = float(n_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
