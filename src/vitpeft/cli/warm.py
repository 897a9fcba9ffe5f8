"""`vitpeft warm COMMAND...`: run COMMAND (a local workflow) with every `vitpeft` it starts forked from a warm process.

A `vitpeft` job spends about three seconds loading Python's torch, torchvision,
timm and peft before its first line of science; the demo's tiny evaluations
take one. `warm` starts one server that loads them once, then runs COMMAND
with VITPEFT_WARM naming the server's socket. A `vitpeft` started under it
(`main`, before parsing its arguments) hands its arguments, environment,
working folder and standard streams to the server, which forks a process that
runs them exactly as a fresh `vitpeft` would, and passes signals and the exit
status back. The job's log, outputs and exit status are the same; only the
start-up is gone.

A job runs itself, as without `warm`, when the server is gone or would load
another torch: another Python or module path, or other settings of what the
kernels read when torch loads (vitpeft.training.kernels; the thread count
excepted, which every command sets from OMP_NUM_THREADS after forking).

Faults fail safe. A client waits for the server's first answer at most
LOAD_S while the server loads torch and ANSWER_S once it has (a stopped or
hung server), and runs the job itself, saying why in one line, when the
answer does not come or the server goes away before the job starts. The job
starts only once its client has its pid and waits for it, and only then gets
the client's standard streams, so a job runs exactly once. The server dies
with the wrapper (Linux's parent-death signal, so even after kill -9) and
removes its socket folder; the wrapper passes SIGTERM, SIGHUP, SIGUSR1/2 and
SIGQUIT on to COMMAND and stops the server when COMMAND ends. A job dies with
its handler (the parent-death signal again: SIGTERM, so training
checkpoints), and a client whose handler died reports the failure only once
its job has ended. `ps` shows a job as its command (`vitpeft train ...`),
the server and handlers as `vitpeft warm: ...`.

For one machine only (make demo, tests, a workstation). On SLURM every job
runs on its own node and start-up is seconds of an hour's job: the profile
never uses it. The server holds the code it loaded: edit the package and a
running `warm` still runs the old code until COMMAND ends.
"""

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vitpeft import code_version

SOCKET_VARIABLE = "VITPEFT_WARM"
READY = "ready"  # beside the socket: the server has loaded torch and answers at once
# A client waits this long for the server's first answer while the server loads torch (seconds on a
# loaded machine), then this long once it has loaded (an answer then takes milliseconds); then it runs cold.
LOAD_S, ANSWER_S = 120.0, 10.0
# What torch, MKL, OpenMP and oneDNN read when they load: a job must agree with the server on these.
LOAD_TIME_PREFIXES = ("ATEN_", "MKL_", "KMP_", "OMP_", "ONEDNN_", "DNNL_", "TORCH_", "PYTORCH_", "CUDA_",
                      "CUBLAS_", "NVIDIA_", "VITPEFT_", "LD_", "PYTHON")
SET_AFTER_FORK = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", SOCKET_VARIABLE}
# Loaded once by the server: everything the subcommands import lazily.
PRELOAD = ("torch", "torchvision", "timm", "peft", "safetensors.torch", "vitpeft.training.train",
           "vitpeft.evaluation.evaluate", "vitpeft.evaluation.curve", "vitpeft.models.pretrain",
           "vitpeft.evaluation.sequence", "vitpeft.data.synthetic", "vitpeft.data.subset")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT)
# The wrapper passes these on to COMMAND; SIGINT (Ctrl-C) reaches COMMAND from the terminal itself.
WRAPPER_FORWARDS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT)
HEADER = struct.Struct("!I")
GO = b"g"  # the client waits for the job: only then does the job start
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ColdStart(Exception):
    """The server cannot run this job (gone, silent, refusing): the client runs it itself; the message says why."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "warm",
        help="run a local workflow with torch loaded once for all its vitpeft jobs",
        description="Start a server that loads torch, torchvision, timm and peft once, run COMMAND with "
        f"{SOCKET_VARIABLE} set, so every `vitpeft` it starts forks from the server instead of loading them "
        "again, then stop the server. Same logs, outputs and exit statuses; seconds less per job. Example: "
        "vitpeft warm snakemake all --cores 2 --configfile config/demo.yaml",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="command and its arguments")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------- the wrapper: server up, COMMAND, server down


def run(args) -> int:
    if not args.command:
        from vitpeft.errors import VitpeftError

        raise VitpeftError("give the command to run, e.g. vitpeft warm snakemake all --cores 2 --configfile config/demo.yaml")
    folder = Path(tempfile.mkdtemp(prefix="vitpeft-warm-"))
    path = folder / "socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
    except OSError as error:  # e.g. a TMPDIR too long for a socket's path: the jobs start cold, as without warm
        print(f"vitpeft warm: no server ({path}: {error.strerror or error}); every job starts its own torch",
              file=sys.stderr)
        folder.rmdir()
        return command_status(args.command, os.environ)
    listener.listen(64)
    wrapper = os.getpid()
    server = os.fork()
    if server == 0:
        os.setsid()  # Ctrl-C reaches COMMAND and its jobs, not the server; the wrapper stops it
        signal.signal(signal.SIGTERM, lambda *_: _quit(folder))
        die_with(wrapper)  # a wrapper killed outright (kill -9) takes its server along
        os._exit(serve(listener, folder))
    listener.close()
    try:
        return command_status(args.command, {**os.environ, SOCKET_VARIABLE: str(path)})
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def command_status(command: list, env) -> int:
    """Run COMMAND to its end, passing on the signals that would end the wrapper; its status as a shell gives it."""
    try:
        child = subprocess.Popen(command, env=env)
    except FileNotFoundError:
        print(f"vitpeft warm: no such command: {command[0]}", file=sys.stderr)
        return 127
    previous = {number: signal.signal(number, lambda received, _: child.send_signal(received))
                for number in WRAPPER_FORWARDS}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends COMMAND its own
    try:
        status = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status


def stop(server: int) -> None:
    """Stop the server and whatever it still runs (its session: jobs orphaned by a killed COMMAND), stopped or not."""
    for number in (signal.SIGTERM, signal.SIGCONT):
        _signal_group(server, number)
    deadline = time.monotonic() + ANSWER_S
    while os.waitpid(server, os.WNOHANG)[0] == 0:
        if time.monotonic() > deadline:  # hung: its SIGTERM handler never ran
            _signal_group(server, signal.SIGKILL)
            os.waitpid(server, 0)
            return
        time.sleep(0.05)


def _signal_group(leader: int, number: int) -> None:
    try:
        os.killpg(leader, number)
    except ProcessLookupError:
        pass


def die_with(parent: int) -> None:
    """Get SIGTERM when `parent` (the process that forked this one) dies, by whatever signal (Linux's prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------- the server


def serve(listener: socket.socket, folder: Path) -> int:
    """Load the heavy modules once, then fork one handler per connection until SIGTERM."""
    import importlib

    from setproctitle import setproctitle

    setproctitle(f"vitpeft warm: server at {folder}, loading torch")
    for name in PRELOAD:
        importlib.import_module(name)
    code_version.describe()  # the code this server loaded: what every job it forks runs, whatever is edited later
    fingerprint = load_fingerprint()
    (folder / READY).touch()
    setproctitle(f"vitpeft warm: server at {folder}")
    server = os.getpid()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _only_this(handle, conn, fingerprint, server)
        conn.close()
        _reap()


def _only_this(function, *args) -> None:
    """Run `function` in a forked child and end the child there, whatever happens: it never runs its parent's code."""
    code = 1
    try:
        function(*args)
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _quit(folder: Path) -> None:
    """The server's end (SIGTERM: the wrapper's stop, or the wrapper's death): no socket folder is left behind."""
    _reap()  # the finished handlers, so their jobs' CPU time reaches the wrapper's accounts
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def handle(conn: socket.socket, fingerprint: dict, server: int) -> None:
    """One job: refuse it if it would load another torch; else fork it, start it once its client waits for it
    (sending its standard streams only then), stop it if the client goes, report its exit status. The job dies
    with this handler (die_with)."""
    from setproctitle import setproctitle

    setproctitle(f"vitpeft warm: handler from server {server}")
    conn.settimeout(ANSWER_S)  # a client silent mid-request is given up
    try:
        request = receive(conn)
    except (OSError, ValueError):
        return
    if request["fingerprint"] != fingerprint:
        send(conn, {"refused": refusal(request["fingerprint"], fingerprint)})
        return
    handler, (to_job, from_handler) = os.getpid(), socket.socketpair()
    job = os.fork()
    if job == 0:
        conn.close()
        to_job.close()
        _only_this(_job, request, from_handler, handler)
    from_handler.close()
    setproctitle(f"vitpeft warm: handler of job {job}, from server {server}")
    pidfd = os.pidfd_open(job)
    started = send(conn, {"pid": job}, [pidfd]) and _hand_over(_receive_go(conn), to_job)
    to_job.close()  # without GO the job receives nothing and exits, never started
    if not started:  # and its client hears nothing more: it never waited for it, or it reports a failure
        os.waitpid(job, 0)
        return
    conn.settimeout(None)
    # Until the job ends. A client that went away (killed) takes its job with it, as a killed process would.
    ready, _, _ = select.select([pidfd, conn], [], [])
    if conn in ready and not _peek(conn):
        os.kill(job, signal.SIGTERM)
    _, status = os.waitpid(job, 0)
    send(conn, {"status": os.waitstatus_to_exitcode(status)})


def _job(request: dict, from_handler: socket.socket, handler: int) -> None:
    """The forked job: dies with its handler; waits for GO and the client's streams, then runs (become)."""
    die_with(handler)
    streams = _receive_go(from_handler)  # blocks until the client waits for it, or the handler gives up
    if streams is not None:
        from_handler.close()
        become(request, streams)  # never returns


def _hand_over(streams: list | None, to_job: socket.socket) -> bool:
    """Pass GO and the client's streams to the job; whether it got them."""
    if streams is None:
        return False
    try:
        socket.send_fds(to_job, [GO], streams)
        return True
    except OSError:
        return False
    finally:
        for fd in streams:
            os.close(fd)


def _receive_go(conn: socket.socket) -> list | None:
    """The client's standard streams (stdin, stdout, stderr) that come with GO; None when GO does not come."""
    try:
        message, fds, _, _ = socket.recv_fds(conn, len(GO), 3)
    except OSError:
        return None
    if message == GO and len(fds) == 3:
        return fds
    for fd in fds:
        os.close(fd)
    return None


def _peek(conn: socket.socket) -> bytes:
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return b""


def refusal(job: dict, server: dict) -> str:
    """Why a job's torch would differ from the server's, in words."""
    if job["executable"] != server["executable"] or job["path"] != server["path"]:
        return f"the job runs another Python or module path ({job['executable']})"
    differing = sorted(k for k in set(job["env"]) | set(server["env"]) if job["env"].get(k) != server["env"].get(k))
    return f"the job's environment would load torch differently ({', '.join(differing)})"


def become(request: dict, fds: list) -> None:
    """In the forked job: take the client's streams, folder, environment, arguments and name; run `vitpeft`; exit."""
    import atexit

    from setproctitle import setproctitle

    setproctitle(" ".join(["vitpeft", *request["argv"]]))  # what ps shows: the job's command, as a fresh process's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
    code = 1
    try:
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            import torch

            torch.set_num_threads(int(threads))  # what a fresh process takes from the variable
        from vitpeft.cli import main

        code = main(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# ---------------------------------------------------------------- the client: `vitpeft` under a warm server


def delegate(argv: list) -> int | None:
    """Run `vitpeft argv` in the warm server; None when it cannot (then run it here, said in one line)."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or (argv and argv[0] == "warm"):
        return None
    try:
        conn, pid, pidfd = _start(Path(path), argv)
    except ColdStart as why:
        print(f"vitpeft: {why}; running this job in its own process", file=sys.stderr)
        return None
    for number in FORWARDED:
        signal.signal(number, lambda received, _frame: _forward(pidfd, received))
    try:
        last = _reply(conn.makefile("rb"))
    except OSError:
        last = None
    if last is None:  # its handler died, and the job with it (die_with): report once the job is gone
        select.select([pidfd], [], [])
        print(f"vitpeft: the warm server's handler of this job died; the job (pid {pid}) has ended with it; "
              "rerun it", file=sys.stderr)
        return 1
    status = last["status"]
    return 128 - status if status < 0 else status  # killed by signal N: 128 + N, as a shell says


def _start(path: Path, argv: list) -> tuple:
    """Hand the job to the server: (connection, job pid, job pidfd) once the job has started, or ColdStart."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(ANSWER_S)
    try:
        conn.connect(str(path))
    except OSError as error:
        raise ColdStart(f"no warm server at {path} ({error.strerror or error})") from None
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
               "fingerprint": load_fingerprint()}
    payload = json.dumps(request).encode()
    try:
        conn.sendall(HEADER.pack(len(payload)) + payload)
        first, fds = _first_reply(conn, path.parent / READY)
        if "refused" in first:
            raise ColdStart(f"the warm server does not serve this job: {first['refused']}")
        # The streams go with GO, not with the request: a server that never answers holds none of them open.
        socket.send_fds(conn, [GO], [0, 1, 2])
        conn.settimeout(None)  # the job runs as long as it runs
    except (OSError, ValueError) as error:  # reset, broken pipe, a reply cut short
        raise ColdStart(f"the warm server went away before the job started ({error})") from None
    return conn, first["pid"], fds[0]


def _first_reply(conn: socket.socket, ready: Path) -> tuple:
    """The server's first answer and the fds it carries: within LOAD_S while it loads torch, and within ANSWER_S
    of its having loaded (a job that waited through the loading gets ANSWER_S from then, not from its start)."""
    data, fds, limit = b"", [], LOAD_S
    deadline = time.monotonic() + LOAD_S
    while not data.endswith(b"\n"):
        now = time.monotonic()
        if limit == LOAD_S and ready.exists():
            limit, deadline = ANSWER_S, min(deadline, now + ANSWER_S)
        if now > deadline:
            raise ColdStart(f"the warm server did not answer in {limit:.0f} s (stopped or hung?)")
        conn.settimeout(min(0.5, deadline - now + 0.01))
        try:
            chunk, more, _, _ = socket.recv_fds(conn, 4096, 1)
        except socket.timeout:
            continue
        if not chunk:
            raise ConnectionResetError("the connection closed")
        data, fds = data + chunk, fds + more
    return json.loads(data), fds


def _forward(pidfd: int, number: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, number)
    except ProcessLookupError:
        pass


def load_fingerprint() -> dict:
    """What decides how torch loads: the interpreter, its module path, and the load-time variables."""
    env = {k: v for k, v in os.environ.items() if k.startswith(LOAD_TIME_PREFIXES) and k not in SET_AFTER_FORK}
    return {"executable": sys.executable, "path": sys.path[1:], "env": env}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- messages


def receive(conn: socket.socket) -> dict:
    (length,) = HEADER.unpack(_exactly(conn, HEADER.size))
    return json.loads(_exactly(conn, length))


def _exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client went away mid-request")
        data += chunk
    return data


def send(conn, message: dict, fds=()) -> bool:
    """Whether the message went out; a client that went away gets nothing (its job is stopped: handle)."""
    line = json.dumps(message).encode() + b"\n"
    try:
        socket.send_fds(conn, [line], list(fds)) if fds else conn.sendall(line)
        return True
    except OSError:
        return False


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None
