"""Downloads against a real HTTP server on 127.0.0.1: verified, atomic, and loud when anything is off."""

import hashlib
import socket
import time

import pytest
import timm
import torch
from httpserver import serve

from vitpeft import backbone, cli, download
from vitpeft.errors import VitpeftError


@pytest.fixture
def served(tmp_path):
    """A folder of files behind a live server, and an empty destination folder."""
    public = tmp_path / "public"
    public.mkdir()
    (public / "blob.bin").write_bytes(bytes(range(256)) * 4099)  # ~1 MiB: several read blocks
    dest = tmp_path / "dest"
    dest.mkdir()
    with serve(public) as url:
        yield public, url, dest


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cli_download_verifies_md5_and_sha256(served, capsys):
    public, url, dest = served
    blob = public / "blob.bin"
    assert cli.main(["download", "--url", f"{url}/blob.bin", "--out", str(dest / "a.bin"), "--md5", md5_of(blob)]) == 0
    assert (dest / "a.bin").read_bytes() == blob.read_bytes()
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    download.download(f"{url}/blob.bin", dest / "b.bin", sha256=sha.upper())
    assert (dest / "b.bin").read_bytes() == blob.read_bytes()


def test_checksum_mismatch_names_file_and_both_sums_and_leaves_nothing(served, capsys):
    public, url, dest = served
    wrong = "0" * 32
    code = cli.main(["download", "--url", f"{url}/blob.bin", "--out", str(dest / "blob.bin"), "--md5", wrong])
    message = capsys.readouterr().err
    assert code == 2
    assert "blob.bin" in message and wrong in message and md5_of(public / "blob.bin") in message
    assert list(dest.iterdir()) == []
    # A rerun with the right checksum downloads again.
    download.download(f"{url}/blob.bin", dest / "blob.bin", md5=md5_of(public / "blob.bin"))
    assert (dest / "blob.bin").read_bytes() == (public / "blob.bin").read_bytes()


def test_truncated_transfer_is_an_error_and_leaves_nothing(served):
    _, url, dest = served
    with pytest.raises(VitpeftError, match=r"truncated: got \d+ of 1049344 bytes"):
        download.download(f"{url}/truncated/blob.bin", dest / "blob.bin")
    assert list(dest.iterdir()) == []


def test_failed_rerun_keeps_the_previous_good_file(served):
    public, url, dest = served
    download.download(f"{url}/blob.bin", dest / "blob.bin")
    with pytest.raises(VitpeftError):
        download.download(f"{url}/truncated/blob.bin", dest / "blob.bin")
    assert (dest / "blob.bin").read_bytes() == (public / "blob.bin").read_bytes()
    assert [p.name for p in dest.iterdir()] == ["blob.bin"]


def test_http_error_names_url_and_status(served):
    _, url, dest = served
    with pytest.raises(VitpeftError, match=rf"{url}/missing.bin failed: HTTP 404"):
        download.download(f"{url}/missing.bin", dest / "missing.bin")
    assert list(dest.iterdir()) == []


def test_malformed_checksum_is_refused_before_any_transfer(served):
    _, url, dest = served
    with pytest.raises(VitpeftError, match="--sha256 must be 64 hex digits"):
        download.download(f"{url}/blob.bin", dest / "blob.bin", sha256="abc")
    assert list(dest.iterdir()) == []


def dino_state_dict(tiny_model_cfg):
    """A backbone state dict with DINO's key names (timm's ViT names, no head)."""
    cfg = tiny_model_cfg
    model = timm.create_model(cfg["name"], img_size=cfg["img_size"], num_classes=0, **cfg["kwargs"])
    return model.state_dict()


def test_fetch_checkpoint_by_url_gives_a_loadable_state_dict(served, tiny_model_cfg):
    public, url, dest = served
    state = dino_state_dict(tiny_model_cfg)
    assert "cls_token" in state and "blocks.0.attn.qkv.weight" in state and "norm.weight" in state
    torch.save(state, public / "dino_vit.pth")
    sha = hashlib.sha256((public / "dino_vit.pth").read_bytes()).hexdigest()
    out = dest / "backbone.pth"
    assert cli.main(["fetch-checkpoint", "--url", f"{url}/dino_vit.pth", "--sha256", sha, "--out", str(out)]) == 0
    loaded = backbone.read_state_dict(out)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_fetch_checkpoint_refuses_a_file_that_is_no_state_dict(served):
    public, url, dest = served
    (public / "page.pth").write_text("<html>login required</html>")
    with pytest.raises(VitpeftError, match="cannot be read as a weights-only torch file"):
        download.fetch_checkpoint(f"{url}/page.pth", dest / "backbone.pth")
    assert list(dest.iterdir()) == []


def test_timm_hub_unreachable_fails_fast_with_a_clear_message(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    started = time.monotonic()
    out = tmp_path / "dino.safetensors"
    code = cli.main(["fetch-checkpoint", "--timm-hub", "timm/vit_base_patch16_224.dino", "--out", str(out)])
    assert code == 2
    assert "cannot reach the Hugging Face hub" in capsys.readouterr().err
    assert time.monotonic() - started < 15
    assert not out.exists()
