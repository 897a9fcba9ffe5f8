"""An evaluation stopped by SLURM's warning signal (SIGUSR1) goes on where it stopped, to the same metrics.

The real command (`vitpeft eval-source --resume-dir`, in this process) gets a real SIGUSR1 from itself after
a chosen number of image batches; the batch feeder below only counts batches and sends it. The stopped job
exits 75 with one line saying where it stopped, writes no metrics, and the same command run again takes back
what was made and makes only the rest: its metrics equal those of a job never stopped.
"""

import os
import signal

import pytest
from runs import make_spec, perturb, write_run

from vitpeft import cli, digests
from vitpeft.evaluation import knn
from vitpeft.study import spec as spec_lib

BATCH = 8


@pytest.fixture
def job(tmp_path, tiny_model_cfg, make_dataset):
    """eval-source of a LoRA run (four passes: shared and routed view, bank and queries), and its arguments."""
    bank, queries = make_dataset("bank", n=60, seed=1), make_dataset("queries", n=30, seed=2)
    spec = make_spec(tiny_model_cfg, "lora", {"r": 2})
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    run = write_run(spec, tmp_path / "run", perturb)

    def argv(out, resume=True):
        return ["eval-source", "--spec", str(tmp_path / "spec.yaml"), "--run", str(run), "--bank", str(bank),
                "--queries", str(queries), "--out", str(out), "--k", "1", "5", "--device", "cpu",
                "--batch-size", str(BATCH), *(["--resume-dir", str(tmp_path / "resume")] if resume else [])]

    return argv


@pytest.fixture
def batches(monkeypatch):
    """Count the batches every pass reads; with `stop_after` set, SIGUSR1 to this process after that many."""
    feed = knn._device_batches
    seen = {"count": 0, "stop_after": None}

    def counted(*args, **kwargs):
        for item in feed(*args, **kwargs):
            seen["count"] += 1
            if seen["count"] == seen["stop_after"]:
                os.kill(os.getpid(), signal.SIGUSR1)
            yield item

    monkeypatch.setattr(knn, "_device_batches", counted)
    return seen


def metrics(path) -> dict:
    """The figures a metrics JSON holds, its digest checked, without the seconds the job took."""
    found = digests.read_json(path)
    found.pop("seconds")
    return found


# Four passes of 8, 4, 8 and 4 batches (bank 60 images, queries 30, at 8 a batch): the signal comes during
# the first pass (3 batches of the bank made), or during the third (the routed view's bank, 2 batches made).
@pytest.mark.parametrize("stop_after, where", [(3, "image pass 0 at 24 of 60 images"),
                                               (14, "image pass 2 at 16 of 60 images")])
def test_a_signalled_evaluation_saves_its_passes_and_the_rerun_ends_as_an_uninterrupted_one(
        job, batches, tmp_path, capsys, stop_after, where):
    assert cli.main(job(tmp_path / "plain.json", resume=False)) == 0
    uninterrupted, total = metrics(tmp_path / "plain.json"), batches["count"]
    assert total == 2 * (8 + 4)

    batches.update(count=0, stop_after=stop_after)
    assert cli.main(job(tmp_path / "source.json")) == 75
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(f"vitpeft eval-source: stopped by SIGUSR1 in {where}; passes saved in "), line
    assert line.endswith(", rerun to continue") and batches["count"] == stop_after
    assert not (tmp_path / "source.json").exists()
    assert list((tmp_path / "resume").glob("eval-source-*/pass-*.pt"))

    batches.update(count=0, stop_after=None)
    assert cli.main(job(tmp_path / "source.json")) == 0
    assert batches["count"] == total - stop_after  # what the stopped attempt made is not made again
    assert metrics(tmp_path / "source.json") == uninterrupted
    assert not list((tmp_path / "resume").glob("eval-source-*")), "the passes outlived the finished job"


def test_a_saved_pass_that_does_not_fit_is_made_again(job, batches, tmp_path, capsys):
    """Another count of images under the same command (the data changed in place): the pass starts over."""
    import torch

    batches.update(stop_after=3)
    assert cli.main(job(tmp_path / "source.json")) == 75
    (saved,) = (tmp_path / "resume").glob("eval-source-*/pass-0000.pt")
    state = torch.load(saved, weights_only=True)
    torch.save({**state, "count": 61}, saved)
    batches.update(count=0, stop_after=None)
    assert cli.main(job(tmp_path / "source.json")) == 0
    assert batches["count"] == 24 and "holds another pass" in capsys.readouterr().err
