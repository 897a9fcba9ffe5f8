"""Any peft adapter that applies to Linear layers from its config alone (LoRA, DoRA, IA3, LoHa, LoKr, VeRA, ...).

args: {peft_type: "LORA" | "IA3" | ..., plus that peft config's own fields},
e.g. {peft_type: LORA, r: 8, use_dora: true} for DoRA. target_modules
defaults to ["q", "v"] (the paper's LoRA targets). The fused qkv is split first
(so "q", "k", "v" and "qkv.q"... are Linear layers), the adapter is injected in
place and the head trains in full.
"""

from dataclasses import dataclass, field

from peft import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.config import PromptLearningConfig
from torch import nn

from vitpeft.errors import VitpeftError
from vitpeft.methods import adapters
from vitpeft.methods.qkv import split_qkv

NAME = "peft"
DEFAULT_TARGETS = ["q", "v"]
# Fields some peft types require that have an obvious default here (IA3: no target is a feed-forward layer).
TYPE_DEFAULTS = {"IA3": {"feedforward_modules": []}}


def _known_types() -> list:
    return sorted(str(key.value if hasattr(key, "value") else key) for key in PEFT_TYPE_TO_CONFIG_MAPPING)


@dataclass(frozen=True)
class Config:
    peft_type: str
    options: dict = field(default_factory=dict)  # the peft config's fields

    @classmethod
    def from_args(cls, args: dict) -> "Config":
        if "peft_type" not in args:
            raise VitpeftError(f"method {NAME!r}: missing argument 'peft_type' (one of {', '.join(_known_types())})")
        options = {key: value for key, value in args.items() if key != "peft_type"}
        return cls(peft_type=args["peft_type"], options=options)

    def __post_init__(self):
        self.peft_config()  # builds it once so every bad field fails here, before any work

    @property
    def target_modules(self) -> list:
        return self.options.get("target_modules", DEFAULT_TARGETS)

    def peft_config(self):
        peft_type = str(self.peft_type).upper()
        if peft_type not in _known_types():
            raise VitpeftError(f"method {NAME!r}: unknown peft_type {self.peft_type!r} (known: {', '.join(_known_types())})")
        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
        if issubclass(config_cls, PromptLearningConfig):
            raise VitpeftError(f"method {NAME!r}: {peft_type} is prompt learning, not an adapter on Linear layers")
        targets = self.target_modules
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise VitpeftError(f"method {NAME!r}: target_modules must be a non-empty list of names, got {targets!r}")
        try:
            fields = {**TYPE_DEFAULTS.get(peft_type, {}), **self.options, "target_modules": list(targets)}
            return config_cls(**fields)
        except (TypeError, ValueError) as error:
            raise VitpeftError(f"method {NAME!r}: bad {peft_type} options {self.options}: {error}") from None


def apply(model: nn.Module, cfg: Config) -> None:
    adapters.check_targets(model, cfg.target_modules, NAME, split=True)
    split_qkv(model)
    adapters.inject(model, cfg.peft_config(), NAME)


routed = adapters.disabled
