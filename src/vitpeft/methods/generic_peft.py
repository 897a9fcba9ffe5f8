"""Any peft adapter that applies to Linear layers from its config alone (LoRA, DoRA, IA3, LoHa, LoKr, VeRA, ...).

args: {peft_type: "LORA" | "IA3" | ..., plus that peft config's own fields},
e.g. {peft_type: LORA, r: 8, use_dora: true} for DoRA. target_modules
defaults to ["q", "v"] (the paper's LoRA targets). The fused qkv is split first
(so "q", "k", "v" and "qkv.q"... are Linear layers), the adapter is injected in
place and the head trains in full.
"""

from peft import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.config import PromptLearningConfig
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods import adapters
from vitpeft.methods.arguments import Peft as Config
from vitpeft.methods.qkv import split_qkv

NAME = "peft"
# Fields some peft types require that have an obvious default here (IA3: no target is a feed-forward layer).
TYPE_DEFAULTS = {"IA3": {"feedforward_modules": []}}


def _known_types() -> list:
    return sorted(str(key.value if hasattr(key, "value") else key) for key in PEFT_TYPE_TO_CONFIG_MAPPING)


def peft_config(cfg: Config):
    """The peft config the arguments describe; peft checks every field here, before any work."""
    peft_type = str(cfg.peft_type).upper()
    if peft_type not in _known_types():
        raise VitpeftError(f"method {NAME!r}: unknown peft_type {cfg.peft_type!r} (known: {', '.join(_known_types())})")
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    if issubclass(config_cls, PromptLearningConfig):
        raise VitpeftError(f"method {NAME!r}: {peft_type} is prompt learning, not an adapter on Linear layers")
    try:
        fields = {**TYPE_DEFAULTS.get(peft_type, {}), **cfg.options, "target_modules": list(cfg.target_modules)}
        return config_cls(**fields)
    except (TypeError, ValueError) as error:
        raise VitpeftError(f"method {NAME!r}: bad {peft_type} options {cfg.options}: {error}") from None


def apply(model: nn.Module, cfg: Config) -> None:
    adapters.check_targets(model, cfg.target_modules, NAME, split=True)
    split_qkv(model)
    adapters.inject(model, peft_config(cfg), NAME)


routed = adapters.disabled
