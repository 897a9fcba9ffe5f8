"""Downloads against a real HTTP server on 127.0.0.1: verified, atomic, and loud when anything is off.

Every refusal is checked as the user meets it: exit 2, one line naming the URL
and the destination (never a temporary file), and nothing left behind.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple

import pytest
import timm
import torch
from httpserver import serve

from vitpeft.models import backbone
from vitpeft import cli
from vitpeft.data import download
from vitpeft.errors import VitpeftError

BLOB_SIZE = 1049344  # ~1 MiB: several read blocks


class Served(NamedTuple):
    public: object  # the folder behind the server
    url: str
    dest: object  # an empty destination folder
    requests: list  # paths the server was asked for


@pytest.fixture
def served(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    (public / "blob.bin").write_bytes(bytes(range(256)) * (BLOB_SIZE // 256))
    dest = tmp_path / "dest"
    dest.mkdir()
    requests = []
    with serve(public, requests) as url:
        yield Served(public, url, dest, requests)


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def refusal(argv, capsys):
    """Run the CLI, expect exit 2, and return its one-line message."""
    code = cli.main(argv)
    message = capsys.readouterr().err
    assert code == 2, message
    assert message.count("\n") == 1 and message.startswith(f"vitpeft {argv[0]}: error: ")
    assert ".tmp-" not in message  # never a temporary file's name
    return message


def test_cli_download_verifies_md5_and_sha256(served):
    blob = served.public / "blob.bin"
    out = served.dest / "a.bin"
    assert cli.main(["download", "--url", f"{served.url}/blob.bin", "--out", str(out), "--md5", md5_of(blob)]) == 0
    assert out.read_bytes() == blob.read_bytes()
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    download.download(f"{served.url}/blob.bin", served.dest / "b.bin", sha256=sha.upper())
    assert (served.dest / "b.bin").read_bytes() == blob.read_bytes()


def test_checksum_mismatch_names_file_and_both_sums_and_leaves_nothing(served, capsys):
    blob, dest = served.public / "blob.bin", served.dest
    wrong = "0" * 32
    message = refusal(["download", "--url", f"{served.url}/blob.bin", "--out", str(dest / "blob.bin"), "--md5", wrong], capsys)
    assert "blob.bin" in message and wrong in message and md5_of(blob) in message
    assert list(dest.iterdir()) == []
    # A rerun with the right checksum downloads again.
    download.download(f"{served.url}/blob.bin", dest / "blob.bin", md5=md5_of(blob))
    assert (dest / "blob.bin").read_bytes() == blob.read_bytes()


def test_transfer_broken_mid_stream_is_an_error_and_leaves_nothing(served, capsys):
    out = served.dest / "blob.bin"
    message = refusal(["download", "--url", f"{served.url}/truncated/blob.bin", "--out", str(out)], capsys)
    assert f"{served.url}/truncated/blob.bin is truncated: got {BLOB_SIZE // 2} of {BLOB_SIZE} bytes" in message
    assert f"nothing was written to {out}" in message
    assert list(served.dest.iterdir()) == []


def test_failed_rerun_keeps_the_previous_good_file(served):
    download.download(f"{served.url}/blob.bin", served.dest / "blob.bin")
    with pytest.raises(VitpeftError):
        download.download(f"{served.url}/truncated/blob.bin", served.dest / "blob.bin")
    assert (served.dest / "blob.bin").read_bytes() == (served.public / "blob.bin").read_bytes()
    assert [p.name for p in served.dest.iterdir()] == ["blob.bin"]


def test_without_checksum_a_server_declaring_no_length_is_refused_before_the_body(served, capsys):
    url, out = f"{served.url}/nolength/truncated/blob.bin", served.dest / "blob.bin"
    message = refusal(["download", "--url", url, "--out", str(out)], capsys)
    assert f"{url} declares no Content-Length" in message and "--md5 or --sha256" in message
    assert list(served.dest.iterdir()) == []


def test_with_a_checksum_no_length_is_fine_and_a_cut_body_is_caught(served, capsys):
    blob, out = served.public / "blob.bin", served.dest / "blob.bin"
    download.download(f"{served.url}/nolength/blob.bin", out, md5=md5_of(blob))
    assert out.read_bytes() == blob.read_bytes()
    out.unlink()
    url = f"{served.url}/nolength/truncated/blob.bin"
    message = refusal(["download", "--url", url, "--out", str(out), "--md5", md5_of(blob)], capsys)
    assert url in message and f"expected {md5_of(blob)}" in message
    assert list(served.dest.iterdir()) == []


@pytest.mark.parametrize("where", ["drip", "headdrip"], ids=["body", "headers"])
def test_a_slow_drip_trips_the_overall_deadline(served, capsys, where):
    # a byte every 50 ms never trips the per-read timeout; the server drips the headers for 30 s
    url, out = f"{served.url}/{where}/blob.bin", served.dest / "blob.bin"
    started = time.monotonic()
    message = refusal(["download", "--url", url, "--out", str(out), "--deadline", "1"], capsys)
    assert time.monotonic() - started < 5
    assert f"download of {url} passed its deadline of 1 s" in message and f"nothing was written to {out}" in message
    assert "--deadline" in message
    assert list(served.dest.iterdir()) == []


def test_http_error_names_url_and_status(served):
    with pytest.raises(VitpeftError, match=rf"{served.url}/missing.bin failed: HTTP 404"):
        download.download(f"{served.url}/missing.bin", served.dest / "missing.bin")
    assert list(served.dest.iterdir()) == []


def closed_port():
    """A bound port nobody listens on: connecting is refused for as long as the socket lives."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    return probe


def test_connection_refused_names_the_url(tmp_path, capsys):
    with closed_port() as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/blob.bin"
        message = refusal(["download", "--url", url, "--out", str(tmp_path / "blob.bin")], capsys)
    assert f"download of {url} failed: Connection refused" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["ftp://example.org/blob.bin", "file:///etc/hostname", "example.org/blob.bin"])
def test_a_url_that_is_not_http_is_refused_before_anything(tmp_path, capsys, url):
    message = refusal(["download", "--url", url, "--out", str(tmp_path / "dest" / "blob.bin")], capsys)
    assert f"cannot download {url!r}: only http:// and https://" in message
    assert list(tmp_path.iterdir()) == []  # not even the destination folder


def test_malformed_checksum_and_deadline_are_refused_before_any_transfer(served, capsys):
    out = str(served.dest / "blob.bin")
    assert "--sha256 must be 64 hex digits" in refusal(
        ["download", "--url", f"{served.url}/blob.bin", "--out", out, "--sha256", "abc"], capsys
    )
    assert "--deadline must be a positive number" in refusal(
        ["download", "--url", f"{served.url}/blob.bin", "--out", out, "--deadline", "0"], capsys
    )
    assert served.requests == [] and list(served.dest.iterdir()) == []


def test_out_below_a_file_is_refused_before_any_transfer(served, capsys):
    (served.dest / "notes.txt").write_text("a file, not a folder")
    out = served.dest / "notes.txt" / "blob.bin"
    message = refusal(["download", "--url", f"{served.url}/blob.bin", "--out", str(out)], capsys)
    assert f"cannot write {out}: {served.dest / 'notes.txt'} is a file, not a folder" in message
    assert served.requests == []


def vitpeft_on_tmpfs(options, folder, *argv):
    """Run `vitpeft ARGV` with a fresh tmpfs mounted at `folder` with `options`.

    The mount lives in a private mount namespace (unshare; as root or as a user
    allowed user namespaces), so it vanishes with the command. Returns the exit
    code, stderr, and the names left in `folder` on the tmpfs afterwards.
    """
    script = 'mount -t tmpfs -o "$1" vitpeft-test "$2" || exit 99; f=$2; shift 2; "$@"; c=$?; echo "left:$(ls -A "$f")"; exit $c'
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", options, str(folder),
         sys.executable, "-m", "vitpeft.cli", *argv],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 99, f"could not mount a tmpfs: {done.stderr}"
    left = done.stdout.rsplit("left:", 1)[1].split()
    return done.returncode, done.stderr, left


def test_a_read_only_destination_fails_before_any_transfer(served):
    # Root ignores chmod, so a read-only tmpfs is what really refuses the write (EROFS).
    out = served.dest / "blob.bin"
    code, err, left = vitpeft_on_tmpfs("ro,size=1m", served.dest, "download", "--url", f"{served.url}/blob.bin", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and ".tmp-" not in err
    assert f"cannot write {out}: the file system is read-only" in err and f"free on {served.dest}" in err
    assert served.requests == [] and left == []


def test_a_disk_filling_up_mid_transfer_is_one_line_with_the_free_space(served):
    (served.public / "big.bin").write_bytes(os.urandom(3 << 20))  # 3 MiB onto a 1 MiB disk
    out = served.dest / "big.bin"
    code, err, left = vitpeft_on_tmpfs("size=1m", served.dest, "download", "--url", f"{served.url}/big.bin", "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and ".tmp-" not in err
    # The partial file is removed before the free space is measured: the whole (empty) tmpfs is free.
    assert f"cannot write {out}: the disk is full (1.0 MiB free on {served.dest})" in err
    assert served.requests == ["/big.bin"] and left == []


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_download_killed_with_sigkill_leaves_a_temp_that_the_next_one_removes(served):
    out = served.dest / "blob.bin"
    slow = subprocess.Popen(
        [sys.executable, "-m", "vitpeft.cli", "download", "--url", f"{served.url}/drip/blob.bin", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: served.requests or slow.poll() is not None, 60, "the download to start")
        assert slow.poll() is None, "the download ended by itself"
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()  # reaped: its pid is no longer alive
    temp = served.dest / f".blob.bin.tmp-{slow.pid}"  # opened before the server was asked
    assert [p.name for p in served.dest.iterdir()] == [temp.name]
    assert cli.main(["download", "--url", f"{served.url}/blob.bin", "--out", str(out)]) == 0
    assert [p.name for p in served.dest.iterdir()] == ["blob.bin"]
    assert out.read_bytes() == (served.public / "blob.bin").read_bytes()


def dino_state_dict(tiny_model_cfg):
    """A backbone state dict with DINO's key names (timm's ViT names, no head)."""
    cfg = tiny_model_cfg
    model = timm.create_model(cfg["name"], img_size=cfg["img_size"], num_classes=0, **cfg["kwargs"])
    return model.state_dict()


def test_fetch_checkpoint_by_url_gives_a_loadable_state_dict(served, tiny_model_cfg):
    state = dino_state_dict(tiny_model_cfg)
    assert "cls_token" in state and "blocks.0.attn.qkv.weight" in state and "norm.weight" in state
    torch.save(state, served.public / "dino_vit.pth")
    sha = hashlib.sha256((served.public / "dino_vit.pth").read_bytes()).hexdigest()
    out = served.dest / "backbone.pth"
    assert cli.main(["fetch-checkpoint", "--url", f"{served.url}/dino_vit.pth", "--sha256", sha, "--out", str(out)]) == 0
    loaded = backbone.read_state_dict(out)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert [p.name for p in served.dest.iterdir()] == ["backbone.pth"]


def fetch_refusal(served, name, capsys):
    url, out = f"{served.url}/{name}", served.dest / "backbone.pth"
    message = refusal(["fetch-checkpoint", "--url", url, "--out", str(out)], capsys)
    assert f"checkpoint {url} " in message and f"nothing was written to {out}" in message
    assert "weights_only" not in message and "trust" not in message  # never advice to load it unsafely
    assert list(served.dest.iterdir()) == []
    return message


def test_fetch_checkpoint_refuses_a_login_page_or_random_bytes(served, capsys):
    (served.public / "page.pth").write_text("<html>login required</html>")
    (served.public / "noise.pth").write_bytes(b"\x17" + os.urandom(4095))
    for name in ("page.pth", "noise.pth"):
        assert "is not a torch checkpoint (no zip archive / pickle header)" in fetch_refusal(served, name, capsys)


class RunsAShellCommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_fetch_checkpoint_refuses_a_pickle_that_runs_code_and_says_so(served, tiny_model_cfg, capsys):
    marker = served.public / "pwned"
    torch.save({**dino_state_dict(tiny_model_cfg), "x": RunsAShellCommand(f"touch {marker}")}, served.public / "evil.pth")
    message = fetch_refusal(served, "evil.pth", capsys)
    system = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)
    assert f"tries to load {system}, which a weights-only load refuses: it is not a plain state dict" in message
    assert not marker.exists()


def test_fetch_checkpoint_refuses_a_cut_checkpoint_even_with_a_matching_length(served, tiny_model_cfg, capsys):
    torch.save(dino_state_dict(tiny_model_cfg), served.public / "whole.pth")
    data = (served.public / "whole.pth").read_bytes()
    (served.public / "cut.pth").write_bytes(data[: len(data) // 2])  # cut before it was published
    assert "is a damaged zip archive" in fetch_refusal(served, "cut.pth", capsys)


def test_fetch_checkpoint_wrong_out_suffix_is_refused_before_any_transfer(served, capsys):
    message = refusal(["fetch-checkpoint", "--url", f"{served.url}/x.pth", "--out", str(served.dest / "x.bin")], capsys)
    assert "must end in .pth, .pt or .safetensors" in message
    assert served.requests == [] and list(served.dest.iterdir()) == []


def test_sha256_or_deadline_with_timm_hub_is_refused_before_contacting_the_hub(served, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", served.url)  # the hub would be asked here
    out = served.dest / "dino.safetensors"
    message = refusal(
        ["fetch-checkpoint", "--timm-hub", "timm/vit_base_patch16_224.dino", "--sha256", "0" * 64, "--out", str(out)],
        capsys,
    )
    assert "--sha256 applies to --url only" in message and "no published file to checksum" in message
    message = refusal(
        ["fetch-checkpoint", "--timm-hub", "timm/vit_base_patch16_224.dino", "--deadline", "60", "--out", str(out)], capsys
    )
    assert "--deadline applies to --url only" in message
    assert served.requests == [] and list(served.dest.iterdir()) == []


def test_timm_hub_unreachable_fails_fast_with_a_clear_message(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    with closed_port() as probe:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{probe.getsockname()[1]}")
        started = time.monotonic()
        out = tmp_path / "dino.safetensors"
        message = refusal(["fetch-checkpoint", "--timm-hub", "timm/vit_base_patch16_224.dino", "--out", str(out)], capsys)
    assert "cannot reach the Hugging Face hub" in message
    assert time.monotonic() - started < 15
    assert not out.exists()
