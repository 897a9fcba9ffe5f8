"""Resume checkpoints: a killed or preempted run continues where it stopped.

They live in `<resume_root>/<spec name>-<spec hash>/`, outside the run folder
(Snakemake deletes a failed job's outputs), and hold `last.pt` plus the one
before it as `prev.pt`, so a crash while writing never loses both. The
forgetting curve's snapshots (`curve/step_000010.safetensors`, ...) are kept
there too as they are made, so a kill loses none of them.

A checkpoint is a plain dict of tensors and Python values, read back with
`torch.load(weights_only=True)`: loading one never runs pickled code. The
folder's SHA256SUMS (vitpeft.digests) records each file's digest before the
file takes its name, and a file is read only when it matches: a damaged
last.pt gives way to prev.pt, a damaged snapshot is refused.

SIGTERM (what `scancel`, Kubernetes and most schedulers send first) and SIGUSR1
(SLURM's `--signal` warning before the time limit) only set a flag; the loop
writes a checkpoint at the next step boundary and exits with EXIT_PREEMPTED.
"""

import os
import shutil
import signal
import threading
import warnings
from pathlib import Path

from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors
from vitpeft.study.spec import spec_hash

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry".
# Distinct from 1 (a crash) and 2 (bad input), so a wrapper or a SLURM requeue
# hook can tell "rerun me and I continue" apart from "rerunning will not help".
EXIT_PREEMPTED = 75

LAST, PREV = "last.pt", "prev.pt"
CURVE = "curve"  # snapshot folder, in the resume folder and in the run folder alike
KEYS = ("spec_hash", "step", "trainable", "optimizer", "scaler", "selection", "log", "pending_loss", "wall_seconds")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class ResumeWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of the previous one."""


class Preempted(Exception):
    """Training stopped on request after saving a resume checkpoint; rerun to continue."""

    def __init__(self, signal_name: str, step: int, folder: Path):
        super().__init__(f"stopped by {signal_name} at step {step}; resume checkpoint in {folder}, rerun to continue")
        self.step = step


def folder_for(resume_root, spec: dict) -> Path:
    """The resume folder of one spec: a changed spec never picks up another's state."""
    return Path(resume_root) / f"{spec['name']}-{spec_hash(spec)}"


def save(folder, state: dict) -> Path:
    """Write `state` as last.pt atomically, keeping the previous last.pt as prev.pt."""
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ValueError(f"resume state lacks {missing}")
    folder = Path(folder)
    last = folder / LAST
    with explained_os_errors(last), atomic_path(last) as tmp:
        _torch_save(state, tmp)
        digest = digests.file_sha256(tmp)
        if last.exists():  # each digest moves to its name before the file does: a kill leaves no file misjudged
            digests.record(folder, PREV, digests.recorded(folder).get(LAST))
            os.replace(last, folder / PREV)
        digests.record(folder, LAST, digest)
    return last


def _torch_save(state: dict, path: Path) -> None:
    """torch.save through a Python file, so a full disk is an OSError (ENOSPC) that explained_os_errors words.

    Given a path, torch's own writer reports it as "unexpected pos"; given a
    file, it may still hide the OSError behind that RuntimeError while closing
    the archive after the failed write, so the OSError is brought back out.
    """
    import torch  # here, not at the top: `vitpeft --help` should not wait for torch

    with open(path, "wb") as handle:
        try:
            torch.save(state, handle)
        except RuntimeError as error:
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise


def snapshot_name(step: int) -> str:
    """The curve snapshot file of `step`: step_000010.safetensors (sorts by step)."""
    return f"step_{step:06d}.safetensors"


def save_snapshot(folder, step: int, tensors: dict) -> Path:
    """Keep the trainable tensors after `step` steps as `folder`/curve/<snapshot_name>, atomically."""
    from safetensors.torch import save

    path = Path(folder) / CURVE / snapshot_name(step)
    data = save(tensors)
    with explained_os_errors(path), atomic_path(path) as tmp:
        tmp.write_bytes(data)  # Python's write: a full disk is an OSError, not a SafetensorError
        digests.record(folder, f"{CURVE}/{path.name}", digests.bytes_sha256(data))
    return path


def check_snapshots(folder, steps) -> None:
    """Refuse a curve snapshot in `folder` whose bytes are not those it was written with."""
    names = [f"{CURVE}/{snapshot_name(step)}" for step in steps]
    digests.verify(folder, names, fix=f"delete {folder} to train the run from the start")


def copy_snapshot(source, step: int, folder) -> None:
    """Copy a checked curve snapshot from the resume folder `source` into the resume folder `folder`."""
    check_snapshots(source, [step])
    name = f"{CURVE}/{snapshot_name(step)}"
    target = Path(folder) / name
    with explained_os_errors(target), atomic_path(target) as tmp:
        shutil.copyfile(Path(source) / name, tmp)
        digests.record(folder, name, digests.recorded(source)[name])


def snapshots(folder) -> dict:
    """{step: path} of the curve snapshots in `folder`/curve."""
    found = {}
    for path in (Path(folder) / CURVE).glob("step_*.safetensors"):
        digits = path.name.removeprefix("step_").removesuffix(".safetensors")
        if digits.isdigit():
            found[int(digits)] = path
    return found


def load(spec: dict, folder=None, path=None) -> dict | None:
    """The newest readable checkpoint for `spec`, or None when there is none.

    `path` (a checkpoint file or folder given by the user) must load; `folder`
    (the automatic resume folder) may be absent or empty. A checkpoint written
    for another spec is refused.
    """
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise VitpeftError(f"resume checkpoint not found: {path}")
        state = _newest(path) if path.is_dir() else _read(path)
        if state is None:
            raise VitpeftError(f"no resume checkpoint in {path}")
        source = path
    else:
        if folder is None or not Path(folder).is_dir():
            return None
        state, source = _newest(Path(folder)), Path(folder)
        if state is None:
            return None
    _check_spec(state, spec, source)
    return state


def _newest(folder: Path) -> dict | None:
    """last.pt, or prev.pt (with a warning) when last.pt is missing or damaged."""
    candidates = [folder / n for n in (LAST, PREV) if (folder / n).exists()]
    errors = []
    for candidate in candidates:
        try:
            state = _read(candidate)
        except VitpeftError as error:
            errors.append(str(error))
            continue
        if errors or candidate.name != LAST:
            why = "; ".join(errors) or f"{folder / LAST} missing"
            warnings.warn(f"{why}; resuming from {candidate}", ResumeWarning)
        return state
    if errors:
        raise VitpeftError(
            f"no readable resume checkpoint in {folder} ({'; '.join(errors)}); delete the folder to start over"
        )
    return None


def _read(path: Path) -> dict:
    import torch

    digests.verify(path.parent, [path.name], fix="")  # the caller says what to do
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to unpickle means "unreadable", whatever the cause
        raise VitpeftError(f"resume checkpoint {path} is unreadable ({type(error).__name__})") from None
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        raise VitpeftError(f"resume checkpoint {path} is not a vitpeft resume checkpoint")
    return state


def _check_spec(state: dict, spec: dict, source: Path) -> None:
    expected = spec_hash(spec)
    if state["spec_hash"] != expected:
        raise VitpeftError(
            f"resume checkpoint {source} was written for a different spec (hash {state['spec_hash']}, "
            f"this spec has {expected}); refusing to mix them"
        )


def clear(folder) -> None:
    """Remove a finished run's resume folder."""
    shutil.rmtree(folder, ignore_errors=True)


class StopFlag:
    """Context manager: SIGTERM / SIGUSR1 set `requested` (the signal's name) instead of killing.

    Handlers go back to what they were on exit. Outside the main thread
    (where Python cannot install handlers) the flag simply never rises.
    """

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

