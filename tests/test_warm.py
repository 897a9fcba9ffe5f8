"""`vitpeft warm`: jobs forked from one warm server do exactly what fresh `vitpeft` processes do."""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
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


# ---------------------------------------------------------------- faults: real processes, real signals


def processes() -> dict:
    """{pid: (parent pid, state letter, command line)} of every process on this machine now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), fields[0], cmdline)
    return table


def children(pid: int) -> dict:
    return {child: row[2] for child, row in processes().items() if row[0] == pid and row[1] not in "ZX"}


def alive(pid: int) -> bool:
    return processes().get(pid, (0, "X"))[1] not in "ZX"  # a zombie has ended: only its status is left


def wait_for(condition, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return found


def server_of(wrapper: int) -> int:
    """The wrapper's child that is not COMMAND (`sleep` or `bash` here), once COMMAND has started."""
    def find():
        found = children(wrapper)
        commands = [pid for pid, cmd in found.items() if cmd.startswith(("sleep", "bash"))]
        return next((pid for pid in found if pid not in commands), None) if commands else None
    return wait_for(find, "the warm server")


def socket_in(folder: Path) -> Path:
    return wait_for(lambda: next(folder.glob("vitpeft-warm-*/socket"), None), "the warm socket")


def read_line(stream, seconds: float) -> str:
    """One line from a binary pipe within `seconds`, without blocking past them."""
    data, deadline = b"", time.monotonic() + seconds
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line within {seconds} s (so far {data!r})"
        if select.select([stream], [], [], remaining)[0]:
            chunk = os.read(stream.fileno(), 1)
            assert chunk, f"the stream ended (so far {data!r})"
            data += chunk
    return data.decode()


def end_all(*pids: int) -> None:
    """SIGKILL what a failed test may leave: the given processes and everything below them."""
    tree = processes()
    doomed, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        doomed.add(pid)
        todo += [child for child, row in tree.items() if row[0] == pid and child not in doomed]
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def idle_wrapper(tmp_path):
    """`vitpeft warm sleep 300` with its socket folder in tmp_path: (wrapper process, server pid, socket)."""
    wrapper = subprocess.Popen([VITPEFT, "warm", "sleep", "300"], env=environment(TMPDIR=str(tmp_path)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = server_of(wrapper.pid)
    yield wrapper, server, socket_in(tmp_path)
    end_all(wrapper.pid, server)
    wrapper.wait(timeout=60)


def holds_a_socket(pid: int) -> bool:
    """Whether `pid` holds a socket; an fd that closes while the folder is read is skipped (a race, not a finding)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                return True
        except FileNotFoundError:
            continue
    return False


def as_in_a_terminal() -> None:
    """A child's SIGINT and SIGHUP as a terminal gives them: a `nohup` or `&` above pytest ignores both, and ignored
    signals are inherited, so a hang-up or Ctrl-C would never reach the wrapper under test."""
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def test_a_job_whose_server_dies_while_it_waits_runs_cold(idle_wrapper):
    """The server killed while loading torch, a job already waiting on it: the job runs cold and says why."""
    _, server, path = idle_wrapper
    os.kill(server, signal.SIGSTOP)  # held mid-load, so the job surely waits on it
    client = subprocess.Popen([VITPEFT, "list-backbones"], env=environment(VITPEFT_WARM=str(path)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: holds_a_socket(client.pid), "the job's connection", 60)
    time.sleep(0.5)  # connected and sent: now waiting for the first answer
    os.kill(server, signal.SIGKILL)
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    assert "dino_vitb16" in stdout  # the job's own work, done cold
    assert stderr.strip().count("\n") == 0 and "went away before the job started" in stderr, stderr
    assert "running this job in its own process" in stderr


def test_a_job_that_waited_through_a_slow_load_gets_answer_s_from_the_servers_readiness(tmp_path, monkeypatch):
    """Under load the server may take longer than ANSWER_S to load torch; a job queued meanwhile must not give up
    the moment the server is ready. Real sockets and a real ready file; a thread answers as a slow server would,
    with the bounds shrunk to keep this quick."""
    from vitpeft.cli import warm as warm_module

    monkeypatch.setattr(warm_module, "LOAD_S", 20.0)
    monkeypatch.setattr(warm_module, "ANSWER_S", 2.0)
    client, server = socket.socketpair()
    ready = tmp_path / warm_module.READY

    def load_then_answer():
        time.sleep(3.0)  # loading: longer than ANSWER_S
        ready.touch()
        time.sleep(0.5)
        server.sendall(b'{"pid": 1}\n')

    threading.Thread(target=load_then_answer, daemon=True).start()
    reply, fds = warm_module._first_reply(client, ready)
    assert reply == {"pid": 1} and fds == []


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGHUP", "timeout", "Ctrl-C", "COMMAND killed"])
def test_the_server_and_its_socket_folder_end_with_the_wrapper(tmp_path, how):
    """kill -9, kill, a hang-up, `timeout 3 vitpeft warm sleep 300`, Ctrl-C (SIGINT to the terminal's process
    group), or the workflow itself killed (kill -9): no server and no socket folder remain."""
    command = [VITPEFT, "warm", "sleep", "300"]
    outer = subprocess.Popen(["timeout", "3", *command] if how == "timeout" else command,
                             env=environment(TMPDIR=str(tmp_path)), start_new_session=True, preexec_fn=as_in_a_terminal)
    wrapper = outer.pid if how != "timeout" else wait_for(lambda: next(iter(children(outer.pid)), None), "wrapper")
    server = server_of(wrapper)
    command_pid = next(pid for pid in children(wrapper) if pid != server)
    socket_in(tmp_path)
    try:
        if how == "Ctrl-C":
            os.killpg(wrapper, signal.SIGINT)  # the wrapper leads its own session here, as in a terminal
        elif how == "COMMAND killed":
            os.kill(command_pid, signal.SIGKILL)
        elif how != "timeout":
            os.kill(wrapper, getattr(signal, how))
        wait_for(lambda: not alive(server), f"the server's end after {how} of its wrapper", 30)
        wait_for(lambda: not list(tmp_path.glob("vitpeft-warm-*")), "the socket folder's removal", 30)
        if how != "SIGKILL":  # the wrapper passed the signal on: COMMAND ended too
            wait_for(lambda: not alive(command_pid), "COMMAND's end", 30)
    finally:
        end_all(wrapper, server, command_pid)
        outer.wait(timeout=60)


def test_a_job_whose_server_is_stopped_runs_cold_in_bounded_time(idle_wrapper):
    """A stopped (or hung) server: a new job waits at most warm.ANSWER_S for it, then runs cold and says why."""
    from vitpeft.cli import warm as warm_module

    _, server, path = idle_wrapper
    served = subprocess.run([VITPEFT, "list-backbones"], env=environment(VITPEFT_WARM=str(path)), capture_output=True,
                            text=True, timeout=300)
    assert served.returncode == 0 and not served.stderr, served.stderr  # served: the server has loaded
    os.kill(server, signal.SIGSTOP)
    started = time.monotonic()
    cold = subprocess.run([VITPEFT, "list-backbones"], env=environment(VITPEFT_WARM=str(path)), capture_output=True,
                          text=True, timeout=120)  # to its output's end: the stopped server holds none of its streams
    waited = time.monotonic() - started
    assert cold.returncode == 0 and cold.stdout == served.stdout, cold.stderr
    assert f"the warm server did not answer in {warm_module.ANSWER_S:.0f} s" in cold.stderr
    assert cold.stderr.strip().count("\n") == 0, cold.stderr
    assert warm_module.ANSWER_S <= waited < warm_module.ANSWER_S + 60


@pytest.fixture
def served_training(job, tmp_path):
    """A long training job under `vitpeft warm`, running: its roles' pids, the wrapper, its run folder and stderr."""
    spec = spec_lib.load(job / "spec.yaml")
    spec["train"].update(steps=100_000, curve_steps=[])
    (tmp_path / "spec.yaml").write_text(spec_lib.dump(spec))
    args = train_args(job, "long")
    args[args.index(str(job / "spec.yaml"))] = str(tmp_path / "spec.yaml")
    args[args.index(str(job / "long"))] = str(tmp_path / "long")
    args[args.index(str(job / ".resume-long"))] = str(tmp_path / ".resume")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as sink:
        wrapper = subprocess.Popen([VITPEFT, "warm", "bash", "-c", " ".join(args) + "; echo status=$?; read _"],
                                   env=environment(TMPDIR=str(tmp_path)), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=sink)
    server = server_of(wrapper.pid)
    try:
        wait_for(lambda: list((tmp_path / ".resume").glob("*/last.pt")), "the job's first checkpoint", 300)
        handler = wait_for(lambda: next(iter(children(server)), None), "the job's handler")
        bash = next(pid for pid, cmd in children(wrapper.pid).items() if cmd.startswith("bash"))
        roles = {"server": server, "handler": handler,
                 "job": wait_for(lambda: next(iter(children(handler)), None), "the job"),
                 "client": wait_for(lambda: next(iter(children(bash)), None), "the client")}  # `vitpeft train`
        yield {"roles": roles, "args": args, "wrapper": wrapper, "out": tmp_path / "long", "stderr": stderr}
    finally:
        wrapper.stdin.close()
        end_all(wrapper.pid, server)
        wrapper.wait(timeout=60)


def test_a_job_dies_with_its_handler_and_its_client_reports_only_then(served_training):
    """The handler killed mid-job: the job ends with it, and the client reports the failure only once it has."""
    roles = served_training["roles"]
    os.kill(roles["handler"], signal.SIGKILL)
    line = read_line(served_training["wrapper"].stdout, 120)  # bash prints the client's status as it ends
    job_alive_then = alive(roles["job"])
    assert not job_alive_then, "the client reported while its job still ran"
    assert line.startswith("status=") and line.strip() != "status=0", line
    assert "handler of this job died" in served_training["stderr"].read_text()
    time.sleep(1)
    assert not served_training["out"].exists()  # no orphan writes its outputs later


def test_a_served_job_shows_in_ps_as_its_own_command(served_training):
    """`ps` and `pgrep -f 'vitpeft train'` find a served job by its command, as they find a fresh process."""
    roles = served_training["roles"]
    title = processes()[roles["job"]][2]
    assert title == " ".join(["vitpeft", *served_training["args"][1:]])
    assert Path(f"/proc/{roles['job']}/comm").read_text().startswith("vitpeft")
    os.kill(roles["client"], signal.SIGTERM)  # passed on to the job: it checkpoints and exits 75
    assert read_line(served_training["wrapper"].stdout, 120).strip() == f"status={resume.EXIT_PREEMPTED}"
