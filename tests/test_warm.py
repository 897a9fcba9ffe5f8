"""`vitpeft warm`: jobs forked from one warm server do exactly what fresh `vitpeft` processes do."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import TINY_MODEL
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.training import resume

BIN = Path(sys.executable).parent
VITPEFT = str(BIN / "vitpeft")
# A client that says whether the server ran its job (the status) or left it to the client (None).
PROBE = "import sys; from vitpeft.cli import warm; print('delegated:', warm.delegate(sys.argv[1:]))"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A demo-like training job (tiny ViT, full fine-tuning) and its weights from a fresh process."""
    root = tmp_path_factory.mktemp("warm")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), np.arange(64) % 4, list("abcd"))
    spec = spec_lib.resolve({
        "name": "warm", "method": "full", "model": TINY_MODEL, "num_classes": 4, "data": {"train": str(root / "data")},
        "train": {"steps": 80, "batch_size": 16, "warmup_steps": 4, "lr": 0.05, "log_every": 10,
                  "checkpoint_every": 5, "precision": "fp32"},
    })
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    done = subprocess.run(train_args(root, "fresh"), env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root


def environment(**extra) -> dict:
    outer = {k: v for k, v in os.environ.items() if k != "VITPEFT_WARM"}
    return {**outer, "OMP_NUM_THREADS": "1", **extra}


def train_args(root: Path, out: str) -> list:
    return [VITPEFT, "train", "--spec", str(root / "spec.yaml"), "--out", str(root / out),
            "--resume-dir", str(root / f".resume-{out}"), "--device", "cpu"]


def warm(command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([VITPEFT, "warm", "bash", "-c", command], env=environment(), capture_output=True,
                          text=True, timeout=600, **kwargs)


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "trainable.safetensors"), load_file(b / "trainable.safetensors")
    return x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x)


def test_a_served_job_writes_the_same_bits_as_a_fresh_process(job):
    args = " ".join(train_args(job, "served")[1:])
    done = warm(f"{sys.executable} -c \"{PROBE}\" {args}")
    assert done.returncode == 0, done.stderr
    assert "delegated: 0" in done.stdout, (done.stdout, done.stderr)  # the server ran it, and it succeeded
    assert "warm: training on cpu" in done.stderr  # the job's own log lines reach the client's stream
    assert same_weights(job / "served", job / "fresh")
    assert (job / "served" / "train_log.csv").read_text().count("\n") == (job / "fresh" / "train_log.csv").read_text().count("\n")


def test_a_job_that_would_load_torch_otherwise_runs_itself(job):
    """Kernel switches are read when torch loads: the server's torch is not this job's, so it is not served."""
    done = warm(f"VITPEFT_CPU_PIN=0 {sys.executable} -c \"{PROBE}\" params --config nowhere.yaml")
    assert done.returncode == 0, done.stderr
    assert "delegated: None" in done.stdout


def test_a_failing_job_gives_its_status_and_message_as_a_fresh_one(job, tmp_path):
    fresh = subprocess.run([VITPEFT, "params", "--config", "nowhere.yaml"], env=environment(), capture_output=True,
                           text=True, cwd=tmp_path)
    served = warm("vitpeft params --config nowhere.yaml; echo status=$?", cwd=tmp_path)
    assert fresh.returncode == 2 and fresh.stderr.strip()
    assert f"status={fresh.returncode}" in served.stdout
    assert fresh.stderr.strip() in served.stderr  # the same one line, naming the missing file


def test_sigterm_reaches_the_served_job_which_checkpoints_and_resumes(job):
    """Preemption through the client: the job checkpoints, exits 75, and a rerun continues to the same bits."""
    pid_file = job / "client.pid"
    args = " ".join(train_args(job, "stopped"))
    wrapper = subprocess.Popen([VITPEFT, "warm", "bash", "-c", f"{args} & echo $! > {pid_file}; wait $!; echo status=$?"],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((job / ".resume-stopped").glob("*/last.pt")):
        assert wrapper.poll() is None, wrapper.communicate()
        assert time.monotonic() < deadline, "no resume checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    stdout, stderr = wrapper.communicate(timeout=120)
    assert f"status={resume.EXIT_PREEMPTED}" in stdout, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    assert not (job / "stopped").exists()

    rerun = subprocess.run(train_args(job, "stopped"), env=environment(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming at step" in rerun.stderr
    assert same_weights(job / "stopped", job / "fresh")


def test_without_a_server_the_job_runs_itself(job, tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, "params", "--config", "nowhere.yaml"],
                          env=environment(VITPEFT_WARM=str(tmp_path / "gone")), capture_output=True, text=True)
    assert done.returncode == 0 and "delegated: None" in done.stdout, done.stderr


def test_warm_without_a_command_says_what_to_give(tmp_path):
    done = subprocess.run([VITPEFT, "warm"], env=environment(), capture_output=True, text=True)
    assert done.returncode == 2 and "give the command to run" in done.stderr
    missing = subprocess.run([VITPEFT, "warm", "no-such-command-here"], env=environment(), capture_output=True, text=True)
    assert missing.returncode == 127 and "no such command: no-such-command-here" in missing.stderr


def test_where_no_socket_can_be_made_the_command_runs_cold(tmp_path):
    deep = tmp_path / ("x" * 110)  # longer than a Unix socket's path may be
    deep.mkdir()
    done = subprocess.run([VITPEFT, "warm", "bash", "-c", "echo ran; exit 3"], env=environment(TMPDIR=str(deep)),
                          capture_output=True, text=True)
    assert done.returncode == 3 and "ran" in done.stdout
    assert "no server" in done.stderr and "every job starts its own torch" in done.stderr
    assert not list(deep.iterdir())  # nothing left behind
