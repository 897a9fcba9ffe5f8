"""An evaluation job's passes over images, resumable: a job stopped by SLURM's warning signal goes on where it was.

Every pass of an evaluation job over a set of images (knn.map_batches: the
bank's and queries' features, a test set's predictions, each alpha's, each
curve point's) is numbered in the order the job makes it, an order its command
fixes. Inside `resumable(folder)`, SIGTERM and SIGUSR1 (the profile's
`--signal=USR1@300`) only raise a flag, as in training (vitpeft.training.resume);
after the batch under way, the finished passes and the rows of the running one
are saved to `folder` and `Stopped` is raised (the command exits 75, and
Snakemake resubmits it). The rerun loads them: finished passes are not made
again, the running one goes on at its first missing row with the same batches,
so the metrics are the same bits (each row depends on its own images only).

`folder` lives under the resume folder, outside every declared output, and is
removed once the job has written its result. A saved pass that does not fit
(another count, shape or type: the code changed) is made again, with a log line.
"""

import contextlib
import shutil
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors
from vitpeft.training import resume

_ACTIVE = None  # the Passes of the job running in this process, or None (nothing resumable)


class Stopped(resume.Preempted):
    """An evaluation stopped on request after saving its passes; rerun the same command to continue."""

    def __init__(self, signal_name: str, index: int, done: int, total: int, folder: Path):
        Exception.__init__(self, f"stopped by {signal_name} in image pass {index} at {done} of {total} images; "
                                 f"passes saved in {folder}, rerun to continue")
        self.step = done


class Passes:
    """The passes of one job: those made (kept until the job ends, to be saved on a stop) and those saved before."""

    def __init__(self, folder: Path, stop: resume.StopFlag):
        self.folder, self.stop = Path(folder), stop
        self.made = []  # [(out tensor, rows done)] in pass order
        self.saved = sorted(self.folder.glob("pass-*.pt")) if self.folder.is_dir() else []
        self.on_disk = {}  # pass index -> rows its file holds

    def begin(self, count: int):
        """(the next pass's index, what was saved of it: (tensor, rows done) or None)."""
        index = len(self.made)
        self.made.append((None, 0))
        path = self.folder / name(index)
        if path not in self.saved:
            return index, None
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and state.get("count") == count and 0 < state.get("done", 0) <= count):
            from vitpeft.evaluation.knn import log

            log(f"{path} holds another pass (the code or its inputs changed): making it again")
            return index, None
        self.on_disk[index] = state["done"]
        return index, (state["values"], state["done"])

    def progress(self, index: int, out, done: int) -> None:
        """After each batch: note how far the pass is; on a stop request, save every pass so far and stop."""
        self.made[index] = (out, done)
        if self.stop.requested:
            self.save()
            raise Stopped(self.stop.requested, index, done, len(out), self.folder)

    def save(self) -> None:
        import torch

        for index, (out, done) in enumerate(self.made):
            if out is None or done == 0 or self.on_disk.get(index) == done:
                continue
            path = self.folder / name(index)
            with explained_os_errors(path), atomic_path(path) as tmp:
                torch.save({"count": len(out), "done": done, "values": out[:done].detach().cpu()}, tmp)
            self.on_disk[index] = done


def name(index: int) -> str:
    return f"pass-{index:04d}.pt"


def active() -> Passes | None:
    return _ACTIVE


@contextlib.contextmanager
def resumable(folder):
    """Make the evaluation passes run inside the block resumable through `folder` (see the module's docstring)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise VitpeftError("resumable passes do not nest")
    with resume.StopFlag() as stop:
        _ACTIVE = Passes(folder, stop)
        try:
            yield _ACTIVE
        finally:
            _ACTIVE = None
    shutil.rmtree(folder, ignore_errors=True)  # the job is done: its result is written
