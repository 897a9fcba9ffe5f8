"""Throughput of vitpeft.data.download over loopback, against the plain loop it replaced.

    python benchmarks/download_speed.py              # 256 MiB, 5 rounds
    python benchmarks/download_speed.py --mib 1024

A local `python -m http.server` (its own process, as a real server is) serves
a file of random bytes. Timed per round, alternating:

- `vitpeft`: download.download with a sha256 (read1 of at most 64 KiB per
  arrival, deadline checked between reads, md5 + sha256, atomic write);
- `plain`: urlopen + read(1 MiB) into a file with md5 + sha256, the loop
  download.py used before it checked a deadline.

Loopback measures the client's own cost, not a network: the wall time is
mostly the Python server's; the client's CPU seconds (process_time, the server
being another process) are what the download code costs. Writes benchmarks/results/download-cpu.json. A benchmark, not a
test: nothing here asserts a speed.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vitpeft.data import download

BLOCK = 1 << 20


def plain(url: str, out: Path) -> None:
    digests = [hashlib.md5(), hashlib.sha256()]
    with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as sink:
        while block := response.read(BLOCK):
            sink.write(block)
            for digest in digests:
                digest.update(block)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(port: int) -> None:
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("http.server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "download-cpu.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        public, dest = Path(work, "public"), Path(work, "dest")
        public.mkdir()
        dest.mkdir()
        blob = public / "blob.bin"
        with open(blob, "wb") as sink:
            for _ in range(args.mib):
                sink.write(os.urandom(BLOCK))
        sha = hashlib.sha256(blob.read_bytes()).hexdigest()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(public)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_serving(port)
            url = f"http://127.0.0.1:{port}/blob.bin"
            seconds = {"vitpeft": [], "plain": []}
            cpu_seconds = {"vitpeft": [], "plain": []}
            for _ in range(args.rounds):
                for name in seconds:
                    out = dest / f"{name}.bin"
                    started, cpu_started = time.perf_counter(), time.process_time()
                    if name == "vitpeft":
                        download.download(url, out, sha256=sha)
                    else:
                        plain(url, out)
                    seconds[name].append(round(time.perf_counter() - started, 3))
                    cpu_seconds[name].append(round(time.process_time() - cpu_started, 3))
                    out.unlink()
        finally:
            server.terminate()
            server.wait()

    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {os.cpu_count()} CPU cores (shared), {platform.processor() or platform.machine()}",
        "python": platform.python_version(),
        "file_mib": args.mib,
        "rounds": args.rounds,
        "seconds": seconds,
        "client_cpu_seconds": cpu_seconds,
        "median_mib_per_s": {name: round(args.mib / statistics.median(s), 1) for name, s in seconds.items()},
        "median_client_cpu_s_per_gib": {
            name: round(statistics.median(s) * 1024 / args.mib, 2) for name, s in cpu_seconds.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_mib_per_s", "median_client_cpu_s_per_gib")}))


if __name__ == "__main__":
    main()
