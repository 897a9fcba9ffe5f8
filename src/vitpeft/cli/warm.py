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

For one machine only (make demo, tests, a workstation). On SLURM every job
runs on its own node and start-up is seconds of an hour's job: the profile
never uses it. The server holds the code it loaded: edit the package and a
running `warm` still runs the old code until COMMAND ends.
"""

import argparse
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

SOCKET_VARIABLE = "VITPEFT_WARM"
# What torch, MKL, OpenMP and oneDNN read when they load: a job must agree with the server on these.
LOAD_TIME_PREFIXES = ("ATEN_", "MKL_", "KMP_", "OMP_", "ONEDNN_", "DNNL_", "TORCH_", "PYTORCH_", "CUDA_",
                      "CUBLAS_", "NVIDIA_", "VITPEFT_", "LD_", "PYTHON")
SET_AFTER_FORK = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", SOCKET_VARIABLE}
# Loaded once by the server: everything the subcommands import lazily.
PRELOAD = ("torch", "torchvision", "timm", "peft", "safetensors.torch", "vitpeft.training.train",
           "vitpeft.evaluation.evaluate", "vitpeft.evaluation.curve", "vitpeft.models.pretrain",
           "vitpeft.evaluation.sequence", "vitpeft.data.synthetic", "vitpeft.data.subset")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT)
HEADER = struct.Struct("!I")


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
    server = os.fork()
    if server == 0:
        os.setsid()  # Ctrl-C reaches COMMAND and its jobs, not the server; the wrapper stops it
        os._exit(serve(listener))
    listener.close()
    try:
        return command_status(args.command, {**os.environ, SOCKET_VARIABLE: str(path)})
    finally:
        stop(server)
        path.unlink(missing_ok=True)
        folder.rmdir()


def command_status(command: list, env) -> int:
    try:
        return subprocess.run(command, env=env).returncode
    except FileNotFoundError:
        print(f"vitpeft warm: no such command: {command[0]}", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def stop(server: int) -> None:
    """Stop the server and whatever it still runs (its session: jobs orphaned by a killed COMMAND)."""
    try:
        os.killpg(server, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.waitpid(server, 0)


# ---------------------------------------------------------------- the server


def serve(listener: socket.socket) -> int:
    """Load the heavy modules once, then fork one handler per connection until SIGTERM."""
    import importlib

    # Reap the finished handlers before going, so their jobs' CPU time reaches the wrapper's accounts.
    signal.signal(signal.SIGTERM, lambda *_: (_reap(), os._exit(0)))
    for name in PRELOAD:
        importlib.import_module(name)
    fingerprint = load_fingerprint()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os._exit(handle(conn, fingerprint))
        conn.close()
        _reap()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def handle(conn: socket.socket, fingerprint: dict) -> int:
    """One job: refuse it if it would load another torch, else fork it, tell its pid, report its exit status."""
    request, fds = receive(conn)
    if request["fingerprint"] != fingerprint:
        send(conn, {"refused": "the job's environment would load torch differently"})
        return 0
    job = os.fork()
    if job == 0:
        conn.close()
        become(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    send(conn, {"pid": job})
    # Until the job ends. A client that went away (killed) takes its job with it, as a killed process would.
    ready, _, _ = select.select([os.pidfd_open(job), conn], [], [])
    if conn in ready and not conn.recv(1, socket.MSG_PEEK):
        os.kill(job, signal.SIGTERM)
    _, status = os.waitpid(job, 0)
    send(conn, {"status": os.waitstatus_to_exitcode(status)})
    return 0


def become(request: dict, fds: list) -> None:
    """In the forked job: take the client's streams, folder, environment and arguments; run `vitpeft`; exit."""
    import atexit

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
    """Run `vitpeft argv` in the warm server; None when there is none (or it refuses): run it here then."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or (argv and argv[0] == "warm"):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        return None  # the server is gone: a fresh process does the same work
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
               "fingerprint": load_fingerprint()}
    payload = json.dumps(request).encode()
    socket.send_fds(conn, [HEADER.pack(len(payload))], [0, 1, 2])
    conn.sendall(payload)
    replies = conn.makefile("rb")
    first = _reply(replies)
    if first is None or "refused" in first:
        return None
    pid = first["pid"]
    for number in FORWARDED:
        signal.signal(number, lambda received, _frame: _forward(pid, received))
    last = _reply(replies)
    if last is None:
        print("vitpeft: the warm server went away before the job ended", file=sys.stderr)
        return 1
    status = last["status"]
    return 128 - status if status < 0 else status  # killed by signal N: 128 + N, as a shell says


def _forward(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
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


def receive(conn: socket.socket) -> tuple[dict, list]:
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    header += _exactly(conn, HEADER.size - len(header))
    (length,) = HEADER.unpack(header)
    return json.loads(_exactly(conn, length)), fds


def _exactly(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client went away mid-request")
        data += chunk
    return data


def send(conn, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the client went away; its job is stopped (handle)


def _reply(replies) -> dict | None:
    line = replies.readline()
    return json.loads(line) if line else None
