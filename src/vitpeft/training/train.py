"""Fine-tune one experiment: the whole loop, readable top to bottom, and the model selection.

The training set sits on the device as one uint8 tensor and is augmented there
(vitpeft.data.augment), so no data-loader workers are needed. Every random draw is
a pure function of (seed, epoch) or (seed, step): the batch order, the crops
and flips, and whatever layers draw from torch's global generator (adapter
dropout, stochastic depth), which is reseeded before every step (vitpeft.training.draws). So a resumed
run replays exactly what an uninterrupted one computes, with no RNG state saved.

Before the first step the run checks that its folders are writable and that
the disk holds what it will write (vitpeft.study.preflight).

Output: `out_dir` appears whole or not at all, holding exactly RUN_FILES, plus
curve/step_XXXXXX.safetensors for each of train.curve_steps; its SHA256SUMS
records every file's digest, which every reader checks first (vitpeft.digests).
"""

import csv
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vitpeft.data import augment
from vitpeft.training import cost, devices, kernels, stages
from vitpeft.training.draws import (
    STREAM_AUGMENT, STREAM_LAYERS, Data, autocast_dtype, batch_indices, derive_seed, load_data, own_global_rng,
)
from vitpeft.methods import registry
from vitpeft.study import preflight
from vitpeft.training import resume
from vitpeft.training import model as model_lib
from vitpeft.study import spec as spec_lib
from vitpeft import digests
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors, write_json
from vitpeft import code_version

RUN_FILES = ("trainable.safetensors", "spec.yaml", "train_log.csv", "summary.json", digests.MANIFEST)
LOG_COLUMNS = ("step", "loss", "lr", "img_per_s")

# Independent random streams, all derived from train.seed.
DISK_MARGIN = 2**16  # bytes beyond the estimate (plus 1%): file framing, spec, log and summary files
LOG_ROW_BYTES = 200  # a generous size of one pickled log row in a resume checkpoint


class Diverged(VitpeftError):
    """The loss became NaN or infinite."""


def train(spec: dict, out_dir, resume_root, device=None, resume_from=None) -> Path:
    """Train `spec` (resolved), write the run folder `out_dir`, return its path.

    Resume state goes to `resume_root`/<name>-<hash>/ and is picked up by a
    rerun; `resume_from` names a checkpoint (file or folder) explicitly.
    Raises resume.Preempted after checkpointing when SIGTERM/SIGUSR1 arrive.
    """
    device = devices.pick(device)
    folder = resume.folder_for(resume_root, spec)
    state = resume.load(spec, folder=folder, path=resume_from)  # a foreign checkpoint is refused first
    with own_global_rng(device):  # the loop reseeds torch's global generators; the caller gets its own back
        check_disk(spec, out_dir, folder)  # nothing written yet, and no data loaded
        if state is not None:
            adopt_snapshots(spec, state["step"], folder, resume_from)
        data = load_data(spec, device)  # all data checks before any model is built

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # the summary's measured peak: this session's training
        run = Run(spec, data, device)
        print(f"{spec['name']}: training on {devices.describe(device)}, precision {run.precision}; "
              f"{kernels.describe(kernels.record(device))}", file=sys.stderr)
        if state is not None:
            run.restore(state)
            print(f"{spec['name']}: resuming at step {run.step} of {spec['train']['steps']}", file=sys.stderr)
        try:
            with resume.StopFlag() as stop:
                run.loop(stop, folder)
        except Diverged:
            resume.clear(folder)  # a rerun would diverge the same way; leave nothing behind
            raise
    write_run(out_dir, spec, run, curve_snapshots(spec, folder))
    resume.clear(folder)
    return Path(out_dir)


# ---------------------------------------------------------------- before the first step


def check_disk(spec: dict, out_dir, folder: Path) -> None:
    """Refuse a run whose run or resume folder is unwritable, or whose disk cannot hold what it will write."""
    preflight.writable(out_dir, "the run folder (--out)")
    preflight.writable(folder, "resume checkpoints (--resume-dir)")
    run_bytes, resume_bytes = disk_estimate(spec, registry.count_trainable(spec))
    already = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    preflight.room_for([
        (out_dir, with_margin(run_bytes), "the run folder"),
        (folder, with_margin(max(0, resume_bytes - already)), "resume checkpoints"),
    ])


def with_margin(n_bytes: int) -> int:
    return n_bytes + n_bytes // 100 + DISK_MARGIN


def disk_estimate(spec: dict, n_trainable: int) -> tuple[int, int]:
    """Bytes (run folder, resume folder) a run writes at most, from its trainable parameter count.

    A resume checkpoint holds the weights, SGD's momentum buffers (momentum > 0)
    and the best weights so far (selection other than last); up to three exist
    at once (prev.pt, last.pt, and the next one being written). Curve snapshots
    sit in the resume folder until the run folder takes a copy.
    """
    cfg = spec["train"]
    weights = 4 * n_trainable  # float32 trainable tensors
    curve = weights * len(cfg["curve_steps"])
    copies = 1 + (cfg["momentum"] > 0) + (cfg["selection"] != "last")
    checkpoint = copies * weights + LOG_ROW_BYTES * (cfg["steps"] // cfg["log_every"] + 1)
    return weights + curve, 3 * checkpoint + curve


def adopt_snapshots(spec: dict, step: int, folder: Path, resume_from) -> None:
    """Make sure the curve snapshots of the steps up to the resumed one are in `folder`.

    With --resume-from they are copied in from beside that checkpoint. A
    missing one is refused now (before anything is written), not after the rest
    of the training.
    """
    due = [s for s in spec["train"]["curve_steps"] if s <= step]
    source = folder
    if resume_from is not None:
        source = Path(resume_from) if Path(resume_from).is_dir() else Path(resume_from).parent
    available = resume.snapshots(source)
    missing = [s for s in due if s not in available]
    if missing:
        fresh_start = f"delete {folder}" if resume_from is None else "leave out --resume-from"
        raise VitpeftError(
            f"resume checkpoint {resume_from or folder} is at step {step}, but the curve snapshot of step "
            f"{missing[0]} ({source / resume.CURVE / resume.snapshot_name(missing[0])}) is missing; "
            f"restore it, or {fresh_start} to train from the start"
        )
    if source.resolve() != folder.resolve():
        for s in due:
            resume.copy_snapshot(source, s, folder)
    else:
        resume.check_snapshots(folder, due)  # before the rest of the training, not after it


def curve_snapshots(spec: dict, folder: Path) -> list:
    """Paths of the run's curve snapshots in step order (all of train.curve_steps must be there)."""
    found = resume.snapshots(folder)
    missing = [s for s in spec["train"]["curve_steps"] if s not in found]
    if missing:  # only if something deleted them during the run
        raise VitpeftError(
            f"curve snapshot of step {missing[0]} vanished from {folder / resume.CURVE} during the run; "
            f"delete {folder} and rerun to train from the start"
        )
    resume.check_snapshots(folder, spec["train"]["curve_steps"])  # before the run folder copies them
    return [found[s] for s in spec["train"]["curve_steps"]]


# ---------------------------------------------------------------- the run


class Run:
    """Model, optimiser and bookkeeping of one training run."""

    def __init__(self, spec: dict, data: Data, device: torch.device):
        self.spec, self.cfg, self.data, self.device = spec, spec["train"], data, device
        self.model = model_lib.for_training(spec, device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise VitpeftError(f"method {spec['method']!r} left no trainable parameters")
        self.optimizer = torch.optim.SGD(
            self.params, lr=self.cfg["lr"], momentum=self.cfg["momentum"],
            weight_decay=self.cfg["weight_decay"], foreach=True,
        )
        self.dtype = autocast_dtype(self.cfg["precision"], device)
        self.precision = str(self.dtype).removeprefix("torch.") if self.dtype else "float32"  # as recorded
        # On the device once: a per-step list -> GPU copy would sync the host every step.
        self.mean = torch.tensor(spec["data"]["mean"], device=device)
        self.std = torch.tensor(spec["data"]["std"], device=device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.forward = torch.compile(self.model) if self.cfg["compile"] else self.model
        self.selection = Selection(self.cfg["selection"], self.cfg["val_every"])
        self.stages = stages.plan(spec)  # lpft: the probe, then full fine-tuning
        self.penalty = model_lib.penalty(spec, self.model)  # l2sp: around its anchor's weights, before any restore
        self.curve_steps = set(self.cfg["curve_steps"])
        self.step = 0  # completed steps
        self.log: list[dict] = []
        self.loss_sum = torch.zeros((), device=device)  # summed losses since the previous log row
        self.wall_seconds = 0.0  # summed over every (resumed) session
        self.resumed_from = 0
        self._last_logged = 0  # step of the previous log row
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, on device

    # ----- state

    def trainable(self) -> dict:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in registry.trainable_state(self.model).items()}

    def state(self) -> dict:
        return {
            "spec_hash": spec_lib.spec_hash(self.spec),
            "step": self.step,
            "trainable": self.trainable(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "selection": self.selection.state_dict(),
            "log": self.log,
            "pending_loss": self.loss_sum.detach().to("cpu", copy=True),  # so the next log row averages all its steps
            "wall_seconds": self.wall_seconds,
        }

    def restore(self, state: dict) -> None:
        registry.load_trainable(self.model, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.selection.load_state_dict(state["selection"])
        self.step = self.resumed_from = state["step"]
        self.log = list(state["log"])
        self._last_logged = self.log[-1]["step"] if self.log else 0
        self.loss_sum = state["pending_loss"].to(self.device)
        self.wall_seconds = state["wall_seconds"]

    # ----- the loop

    def loop(self, stop: resume.StopFlag, folder: Path) -> None:
        cfg, steps = self.cfg, self.cfg["steps"]
        order_cache, aug_gen = {}, torch.Generator(self.device)
        clock = Clock()
        self.model.train()
        if self.step == 0 and 0 in self.curve_steps:
            self.snapshot(folder)  # the untouched model with its fresh head
        with tqdm(total=steps, initial=self.step, desc=self.spec["name"], mininterval=1, dynamic_ncols=True) as bar:
            while self.step < steps:
                indices = batch_indices(
                    self.step, len(self.data.train_y), cfg["batch_size"], cfg["seed"], order_cache, self.device
                )
                aug_gen.manual_seed(derive_seed(cfg["seed"], STREAM_AUGMENT, self.step))
                torch.manual_seed(derive_seed(cfg["seed"], STREAM_LAYERS, self.step))  # dropout, drop-path
                self.loss_sum += self.train_step(indices, aug_gen)
                self.step += 1
                bar.update(1)
                if self.step % cfg["log_every"] == 0 or self.step == steps:
                    row = self.log_row(clock)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                if self.selection.due(self.step, steps):
                    self.check_finite()
                    self.selection.update(self.step, self.evaluate(), self.trainable)
                if self.step in self.curve_steps:
                    self.snapshot(folder)
                if stop.requested:
                    self.checkpoint(folder, clock)
                    raise resume.Preempted(stop.requested, self.step, folder)
                if self.step % cfg["checkpoint_every"] == 0 and self.step < steps:
                    self.checkpoint(folder, clock)
        self.check_finite()
        self.wall_seconds += clock.lap()

    def train_step(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One SGD step; returns the (detached, on-device) loss without syncing."""
        cfg = self.cfg
        stage = stages.at(self.stages, self.step)
        if self.step == stage.start > 0:
            self.optimizer.state.clear()  # a later stage starts with fresh momentum, as a new optimiser would
        lr = stage.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = augment.random_resized_crop_flip(
            self.data.train_x[indices], self.spec["model"]["img_size"],
            scale=tuple(cfg["crop_scale"]), hflip=cfg["hflip"], generator=generator,
        )
        # The public code's RandAugment / TrivialAugmentWide / RandomErasing, per image; the default policy
        # returns x itself without a draw. Erased pixels take the mean: 0 after normalising, as there.
        x = augment.apply_policy(x, cfg["augment"], generator, erase_value=self.mean)
        x = augment.normalize(x, self.mean, self.std)
        self.optimizer.zero_grad(set_to_none=True)
        with stages.trains(self.model, stage):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), self.data.train_y[indices])
            self.scaler.scale(loss).backward()
        if self.penalty is not None:  # l2sp: its gradient added to the unscaled CE gradient, in place
            self.scaler.unscale_(self.optimizer)
            self.penalty.add_grad_()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss = loss.detach()
        bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, self.step + 1, self._first_bad)
        return loss

    def check_finite(self) -> None:
        """Host sync: stop if any step so far had a NaN/inf loss (before anything is saved)."""
        first_bad = int(self._first_bad)
        if first_bad >= 0:
            lr = stages.learning_rate(self.stages, first_bad - 1)
            raise Diverged(
                f"{self.spec['name']}: the loss became non-finite at step {first_bad} (lr {lr:.3g}); "
                "training stopped and nothing was saved"
            )

    def log_row(self, clock: "Clock") -> dict:
        self.check_finite()
        count = self.step - self._last_logged
        timed = self.step - max(self._last_logged, self.resumed_from)  # steps run in this session
        seconds = clock.since_log(self.device)
        row = {
            "step": self.step,
            "loss": float(self.loss_sum) / count,
            "lr": stages.learning_rate(self.stages, self.step - 1),
            "img_per_s": timed * self.cfg["batch_size"] / seconds if seconds > 0 else float("nan"),
        }
        self.log.append(row)
        self._last_logged = self.step
        self.loss_sum.zero_()
        return row

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 accuracy (%) on the selection split."""
        images, labels = self.data.eval_x, self.data.eval_y
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for start in range(0, len(labels), self.cfg["batch_size"]):
            chunk = slice(start, start + self.cfg["batch_size"])
            x = augment.normalize(augment.resize(images[chunk], self.spec["model"]["img_size"]), self.mean, self.std)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.forward(x)
            correct += (logits.argmax(dim=1) == labels[chunk]).sum()
        self.model.train()
        return 100.0 * int(correct) / len(labels)

    def checkpoint(self, folder: Path, clock: "Clock") -> None:
        self.check_finite()  # never checkpoint a diverged state
        self.wall_seconds += clock.lap()
        resume.save(folder, self.state())

    def snapshot(self, folder: Path) -> None:
        """Keep this step's trainable weights for the forgetting curve (on disk at once: a kill keeps it)."""
        self.check_finite()
        resume.save_snapshot(folder, self.step, self.trainable())

    def final_state(self) -> dict:
        return self.selection.best_state if self.selection.best_state is not None else self.trainable()


class Clock:
    """Wall time between log rows (synced so GPU work is counted) and per session."""

    def __init__(self):
        self.session_start = self.log_start = time.perf_counter()

    def since_log(self, device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        seconds, self.log_start = now - self.log_start, now
        return seconds

    def lap(self) -> float:
        """Seconds since the last lap (for the running wall-time total)."""
        now = time.perf_counter()
        seconds, self.session_start = now - self.session_start, now
        return seconds


class Selection:
    """Which weights the run keeps: the last step's, or the best on a held-out split."""

    def __init__(self, mode: str, every: int):
        self.mode, self.every = mode, every
        self.best_acc: float | None = None
        self.best_step: int | None = None
        self.best_state: dict | None = None
        self.history: list[list] = []  # [step, accuracy] of every evaluation

    def due(self, step: int, steps: int) -> bool:
        return self.mode != "last" and (step % self.every == 0 or step == steps)

    def update(self, step: int, accuracy: float, snapshot) -> None:
        self.history.append([step, accuracy])
        if self.best_acc is None or accuracy > self.best_acc:
            self.best_acc, self.best_step, self.best_state = accuracy, step, snapshot()

    def state_dict(self) -> dict:
        return {"best_acc": self.best_acc, "best_step": self.best_step, "best_state": self.best_state,
                "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.best_acc, self.best_step, self.best_state = state["best_acc"], state["best_step"], state["best_state"]
        self.history = [list(entry) for entry in state["history"]]


# ---------------------------------------------------------------- output


def write_run(out_dir, spec: dict, run: Run, snapshots: list) -> None:
    """The run folder, atomically: trainable tensors only, resolved spec, log, summary, curve snapshots, digests."""
    from safetensors.torch import save

    with explained_os_errors(out_dir), atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "trainable.safetensors").write_bytes(save(run.final_state()))  # a full disk is an OSError
        (tmp / "spec.yaml").write_text(spec_lib.dump(spec))
        write_log(tmp / "train_log.csv", run.log)
        write_json(tmp / "summary.json", summary(spec, run))
        if snapshots:
            (tmp / resume.CURVE).mkdir()
            for path in snapshots:
                shutil.copyfile(path, tmp / resume.CURVE / path.name)
        digests.seal(tmp)


def write_log(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def summary(spec: dict, run: Run) -> dict:
    steps, batch = spec["train"]["steps"], spec["train"]["batch_size"]
    selection = run.selection
    return {
        "steps": steps,
        "final_loss": run.log[-1]["loss"],
        "selection": selection.mode,
        "selected_on": selection_split(spec),
        "selected_step": selection.best_step if selection.mode != "last" else steps,
        "best_val_acc": selection.best_acc,
        "val_history": selection.history,
        "wall_seconds": round(run.wall_seconds, 3),
        "mean_img_per_s": round(steps * batch / run.wall_seconds, 2) if run.wall_seconds > 0 else None,
        "device": devices.describe(run.device),
        "kernels": kernels.record(run.device),
        "code": code_version.describe(),
        "precision": run.precision,
        "trainable_params": sum(p.numel() for p in run.params),
        "resumed_from_step": run.resumed_from,
        "curve_steps": spec["train"]["curve_steps"],
        "cost": cost.record(spec, measured_peak(run.device)),
        **method_record(run),
    }


def measured_peak(device: torch.device) -> int | None:
    """The GPU memory this training session peaked at (since its start); None on a CPU, which is not measured."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def method_record(run: Run) -> dict:
    """What a two-stage run (lpft) or a penalised one (l2sp) did besides; nothing for the other methods."""
    record = {}
    if len(run.stages) > 1:
        record["stages"] = [{"start": stage.start, "steps": stage.steps, "lr": stage.lr,
                             "warmup_steps": stage.warmup_steps, "head_only": stage.head_only} for stage in run.stages]
    if run.penalty is not None:
        record["penalty_reference_bytes"] = run.penalty.reference_bytes()
    return record


def selection_split(spec: dict) -> str | None:
    """What the kept weights were chosen on, in words (None for selection: last)."""
    mode, data = spec["train"]["selection"], spec["data"]
    if mode == "best_test":
        return f"test split {data['test']}"
    if mode == "best_val":
        held_out = f"held-out {spec['train']['val_fraction']} of train"
        return f"validation split {data['val']}" if data["val"] else held_out
    return None
