"""A backbone checkpoint onto disk: downloaded and read in its key layout, or saved from timm's hub copy.

Nothing appears at `out` unless it loads: a URL that gives an HTML page or
another layout's file is refused with nothing written.
"""

import urllib.error
import urllib.request
from pathlib import Path

from vitpeft.data.download import DEADLINE_S, download
from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors
from vitpeft.models.layouts import SUFFIXES, check_file, suffixes_text


def fetch_checkpoint(url: str, out, sha256: str | None = None, deadline_s: float = DEADLINE_S,
                     layout: str = "timm") -> Path:
    """Download a backbone checkpoint and check it reads in its key `layout` before it appears at `out`."""
    out = Path(out)
    if layout not in SUFFIXES:
        raise VitpeftError(f"--layout {layout}: unknown (known: {', '.join(SUFFIXES)})")
    if out.suffix not in SUFFIXES[layout]:
        raise VitpeftError(f"--out {out} must end in {suffixes_text(layout)} for layout {layout!r} "
                           "(the suffix picks the format)")

    def readable(tmp: Path) -> None:
        try:
            check_file(tmp, layout, suffix=out.suffix, name=url)
        except VitpeftError as error:
            raise VitpeftError(f"{error}; nothing was written to {out}: check that the URL gives the checkpoint itself") from None

    return download(url, out, sha256=sha256, deadline_s=deadline_s, check=readable)


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
    with explained_os_errors(out), atomic_path(out) as tmp:
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
