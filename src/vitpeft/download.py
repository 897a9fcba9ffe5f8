"""Fetch a file over HTTP(S): streamed, checksum-verified, and atomic.

The file appears at `out` only once every byte has arrived and its checksum
matches; a failed or short transfer leaves nothing behind, so a rerun simply
downloads again.
"""

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path

BLOCK = 1 << 20
TIMEOUT_S = 60  # per socket operation, not for the whole transfer
REPORT_EVERY = 100 * BLOCK  # one progress line per 100 MiB keeps cluster logs readable


def download(url: str, out, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download `url` to `out`, verifying `md5` and/or `sha256` when given."""
    out = Path(out)
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    for name, value in expected.items():
        _check_hex(name, value)
    with atomic_path(out) as tmp:
        digests = _fetch(url, tmp)
        for name, value in expected.items():
            if digests[name].hexdigest() != value:
                raise VitpeftError(
                    f"{out.name} downloaded from {url} has {name} {digests[name].hexdigest()}, expected {value}"
                )
    return out


def _check_hex(name: str, value: str) -> None:
    length = hashlib.new(name).digest_size * 2
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise VitpeftError(f"--{name} must be {length} hex digits, got {value!r}")


def _fetch(url: str, tmp: Path) -> dict:
    """Stream `url` into `tmp`; return the md5 and sha256 of what arrived."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    received, next_report = 0, REPORT_EVERY
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as sink:
            length = response.headers.get("Content-Length")
            expected_length = int(length) if length is not None else None
            while block := response.read(BLOCK):
                sink.write(block)
                for digest in digests.values():
                    digest.update(block)
                received += len(block)
                if received >= next_report:
                    _progress(url, received, expected_length)
                    next_report += REPORT_EVERY
    except urllib.error.HTTPError as error:
        raise VitpeftError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise VitpeftError(f"download of {url} failed: {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise VitpeftError(f"download of {url} broke off after {received} bytes: {error!r}") from None
    except ValueError as error:  # urlopen's "unknown url type"
        raise VitpeftError(f"cannot download {url!r}: {error}") from None
    if expected_length is not None and received != expected_length:
        raise VitpeftError(f"download of {url} is truncated: got {received} of {expected_length} bytes")
    return digests


def _progress(url: str, received: int, total: int | None) -> None:
    of_total = f" of {total >> 20} MiB" if total else ""
    print(f"{os.path.basename(url)}: {received >> 20} MiB{of_total}", file=sys.stderr, flush=True)


def fetch_checkpoint(url: str, out, sha256: str | None = None) -> Path:
    """Download a backbone checkpoint and check it reads as a plain state dict before it appears at `out`."""
    from vitpeft.backbone import read_state_dict

    out = Path(out)
    with atomic_path(out) as tmp:
        staged = tmp.with_name(tmp.name + out.suffix)  # read_state_dict picks the format by suffix
        try:
            download(url, staged, sha256=sha256)
            read_state_dict(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return out


def fetch_timm_checkpoint(name: str, out) -> Path:
    """Save timm's pretrained weights for `name` (e.g. timm/vit_base_patch16_224.dino), head removed, as safetensors."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise VitpeftError(f"--out must end in .safetensors for --timm-hub, got {out}")
    if not constants.HF_HUB_OFFLINE:
        _check_reachable(constants.ENDPOINT)
    model_name = f"hf-hub:{name}" if "/" in name else name
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as error:  # hub, cache and timm each raise their own types
        raise VitpeftError(f"cannot load pretrained timm model {name!r}: {error}") from None
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp))
    return out


def _check_reachable(endpoint: str, timeout_s: float = 10) -> None:
    # huggingface_hub retries an unreachable hub for about a minute; one quick probe fails fast instead.
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered: reachable
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise VitpeftError(
            f"cannot reach the Hugging Face hub at {endpoint} ({reason}); "
            "use --url with the checkpoint's URL, or set HF_HUB_OFFLINE=1 if the model is in the local cache"
        ) from None
