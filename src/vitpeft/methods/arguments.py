"""Every fine-tuning method's arguments, checked without torch: the workflow validates them while planning.

Each method's `Config` dataclass checks its own values; `check_depth(depth)`
checks them against the model. The method modules (vitpeft.methods.<name>)
apply a checked config to a model. `peft`'s options are checked here only in
shape (a type name and a mapping); peft itself checks the fields when the
method module builds its config (`vitpeft check` and every job do).
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from vitpeft.errors import VitpeftError

HEAD_ONLY = frozenset({"linear"})  # methods that train only a head: the backbone stays the pretrained one


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Full:
    """All weights train; no arguments."""


@dataclass(frozen=True)
class Linear:
    """Only the classifier trains; no arguments."""


@dataclass(frozen=True)
class TopK:
    k: int = 3

    def __post_init__(self):
        if not is_int(self.k) or self.k < 1:
            raise VitpeftError(f"method 'topk': k must be an integer >= 1, got {self.k!r}")

    def check_depth(self, depth: int) -> None:
        if self.k > depth:
            raise VitpeftError(f"method 'topk': k={self.k} exceeds the model's {depth} blocks")


def _check_lora(cfg, method: str) -> None:
    if not is_int(cfg.r) or cfg.r <= 0:
        raise VitpeftError(f"method {method!r}: r must be a positive integer, got {cfg.r!r}")
    if cfg.alpha is not None and not (is_number(cfg.alpha) and cfg.alpha > 0):
        raise VitpeftError(f"method {method!r}: alpha must be a positive number, got {cfg.alpha!r}")
    if not (is_number(cfg.dropout) and 0 <= cfg.dropout < 1):
        raise VitpeftError(f"method {method!r}: dropout must be in [0, 1), got {cfg.dropout!r}")
    check_targets(cfg.target_modules, method)


def check_targets(targets, method: str) -> None:
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise VitpeftError(f"method {method!r}: target_modules must be a non-empty list of names, got {targets!r}")


@dataclass(frozen=True)
class Lora:
    """The paper's LoRA: rank r, alpha = r, no dropout, on the query and value projections."""

    r: int = 8
    alpha: Optional[float] = None  # None = r (the paper's choice)
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["q", "v"])

    def __post_init__(self):
        _check_lora(self, "lora")


@dataclass(frozen=True)
class LoraQKV:
    """LoRA on timm's fused qkv Linear (one adapter for q, k and v together)."""

    r: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["qkv"])

    def __post_init__(self):
        _check_lora(self, "lora_qkv")


@dataclass(frozen=True)
class BlockExpansion:
    p: int = 1
    interval: Optional[int] = None  # None = the paper's rule (block_interval)

    def __post_init__(self):
        if not is_int(self.p) or self.p < 1:
            raise VitpeftError(f"method 'block_expansion': p must be an integer >= 1, got {self.p!r}")
        if self.interval is not None and (not is_int(self.interval) or self.interval < 1):
            raise VitpeftError(f"method 'block_expansion': interval must be an integer >= 1, got {self.interval!r}")

    def check_depth(self, depth: int) -> None:
        if self.p > depth:
            raise VitpeftError(f"method 'block_expansion': p={self.p} exceeds the model's {depth} blocks")
        if self.interval is not None and self.p * self.interval > depth:
            raise VitpeftError(
                f"method 'block_expansion': p={self.p} blocks every {self.interval} do not fit in {depth} blocks"
            )

    def insert_after(self, depth: int) -> list:
        """1-based indices of the original blocks that get a copy right after them."""
        s = self.interval or block_interval(self.p, depth)
        return [s * (i + 1) for i in range(self.p)]


def block_interval(p: int, depth: int) -> int:
    """The paper's interval s for p new blocks in `depth` original blocks: ceil((depth - 1) / p), if it fits.

    The paper's configs on 12 blocks use s = 11, 6, 4, 3 for p = 1..4. The rule
    reaches past the last block for some p (p = 5 on 12 gives 3, and 5 x 3 > 12);
    s then falls back to depth // p, the widest interval that fits.
    """
    s = math.ceil((depth - 1) / p) if depth > 1 else 1
    return s if p * s <= depth else depth // p


@dataclass(frozen=True)
class Peft:
    """Any peft adapter on Linear layers: {peft_type, plus that peft config's own fields}."""

    peft_type: str
    options: dict = field(default_factory=dict)  # the peft config's fields

    @classmethod
    def from_args(cls, args: dict) -> "Peft":
        if "peft_type" not in args:
            raise VitpeftError("method 'peft': missing argument 'peft_type' (LORA, IA3, LOHA, LOKR, VERA, ...)")
        return cls(peft_type=args["peft_type"], options={key: value for key, value in args.items() if key != "peft_type"})

    def __post_init__(self):
        if not isinstance(self.peft_type, str) or not self.peft_type:
            raise VitpeftError(f"method 'peft': peft_type must be a name such as LORA or IA3, got {self.peft_type!r}")
        check_targets(self.target_modules, "peft")

    @property
    def target_modules(self) -> list:
        return self.options.get("target_modules", ["q", "v"])  # the paper's LoRA targets


def _non_negative(value, method: str, name: str) -> None:
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise VitpeftError(f"method {method!r}: {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Lpft:
    """LP-FT (Kumar et al. 2022, arXiv 2202.10054): a linear probe first, then every weight from that head.

    The run's train.steps are split: the first probe_steps train the head alone (the backbone frozen, as
    `linear`), on a cosine schedule of their own with peak probe_lr and probe_warmup_steps of warm-up; the
    rest fine-tune every weight from the probe's head, on the run's schedule (lr, warm-up) over the
    remaining steps, with fresh momentum. null defaults: half the steps, the run's lr, the run's
    warm-up scaled to the probe's share (vitpeft.training.stages).
    """

    probe_steps: Optional[int] = None
    probe_lr: Optional[float] = None
    probe_warmup_steps: Optional[int] = None

    def __post_init__(self):
        if self.probe_steps is not None and (not is_int(self.probe_steps) or self.probe_steps < 1):
            raise VitpeftError(f"method 'lpft': probe_steps must be an integer >= 1, got {self.probe_steps!r}")
        if self.probe_lr is not None and not (is_number(self.probe_lr) and math.isfinite(self.probe_lr)
                                              and self.probe_lr > 0):
            raise VitpeftError(f"method 'lpft': probe_lr must be a positive number, got {self.probe_lr!r}")
        if self.probe_warmup_steps is not None and (not is_int(self.probe_warmup_steps) or self.probe_warmup_steps < 0):
            raise VitpeftError(
                f"method 'lpft': probe_warmup_steps must be an integer >= 0, got {self.probe_warmup_steps!r}"
            )

    def check_steps(self, steps: int) -> None:
        """The probe must leave the fine-tuning stage at least one of the run's steps."""
        if self.probe_steps is not None and self.probe_steps >= steps:
            raise VitpeftError(
                f"method 'lpft': probe_steps={self.probe_steps} must be below the run's train.steps ({steps}), "
                "which the probe and the fine-tuning share"
            )
        if self.probe_warmup_steps is not None and self.probe_warmup_steps > self.probes(steps):
            raise VitpeftError(f"method 'lpft': probe_warmup_steps={self.probe_warmup_steps} exceeds the probe's "
                               f"{self.probes(steps)} steps")

    def probes(self, steps: int) -> int:
        """The probe's steps in a run of `steps` (null: half, at least 1)."""
        return self.probe_steps if self.probe_steps is not None else max(1, steps // 2)


L2SP_ANCHORS = ("pretrained", "start")


@dataclass(frozen=True)
class L2SP:
    """L2-SP (Li, Grandvalet, Davoine 2018, arXiv 1802.01483): every weight trains, with the loss
    CE + alpha/2 ||w - w_0||^2 over the backbone + beta/2 ||w_head||^2.
    Defaults 0.01 and 0.01: thuml's Transfer-Learning-Library (examples/task_adaptation/image_classification/delta.py).
    w_0 (`anchor`): the pretrained weights (default, the paper's starting point and the one the study measures
    forgetting of), or `start`, the weights the run starts from; they differ only in a task sequence's shared
    steps after the first, which start from the step before (then `start` is the continual-learning L2 baseline).
    """

    alpha: float = 0.01
    beta: float = 0.01
    anchor: str = "pretrained"

    def __post_init__(self):
        _non_negative(self.alpha, "l2sp", "alpha")
        _non_negative(self.beta, "l2sp", "beta")
        if self.anchor not in L2SP_ANCHORS:
            raise VitpeftError(f"method 'l2sp': anchor must be one of {', '.join(L2SP_ANCHORS)}, got {self.anchor!r}")

    def anchors_at_start(self) -> bool:
        return self.anchor == "start"


def _positive_int(value, method: str, name: str) -> None:
    if not is_int(value) or value < 1:
        raise VitpeftError(f"method {method!r}: {name} must be an integer >= 1, got {value!r}")


def _dropout(value, method: str) -> None:
    if not (is_number(value) and 0 <= value < 1):
        raise VitpeftError(f"method {method!r}: dropout must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class VptShallow:
    """VPT-shallow (Jia et al. 2022, arXiv 2203.12119): `length` learnable tokens inserted after [CLS], before the
    patch tokens, at the input of the first block; only they and the head train. Defaults: the authors' code
    (KMnP/vpt src/configs/config.py: MODEL.PROMPT.NUM_TOKENS 5, DROPOUT 0.0); the paper chose the length per task
    from {1, 5, 10, 50, 100, 200}."""

    length: int = 5
    dropout: float = 0.0

    def __post_init__(self):
        _positive_int(self.length, self.method, "length")
        _dropout(self.dropout, self.method)

    method = "vpt_shallow"


@dataclass(frozen=True)
class VptDeep(VptShallow):
    """VPT-deep: every block gets its own `length` new tokens; the previous block's prompt outputs are dropped."""

    method = "vpt_deep"


@dataclass(frozen=True)
class AdaptFormer:
    """AdaptFormer (Chen et al. 2022, arXiv 2205.13535): beside each block's MLP, a bottleneck
    (down to `bottleneck`, ReLU, dropout, up) reads the block's residual stream and adds `scale` times its output;
    the up projection starts at zero. Defaults: the authors' image setting (ShoufaChen/AdaptFormer main_image.py and
    models/custom_modules.py: ffn_num 64, ffn_adapter_scalar 0.1 fixed, no LayerNorm in the adapter, dropout 0.1)."""

    bottleneck: int = 64
    scale: float = 0.1
    dropout: float = 0.1

    def __post_init__(self):
        _positive_int(self.bottleneck, "adaptformer", "bottleneck")
        if not (is_number(self.scale) and math.isfinite(self.scale) and self.scale > 0):
            raise VitpeftError(f"method 'adaptformer': scale must be a finite number > 0, got {self.scale!r}")
        _dropout(self.dropout, "adaptformer")


@dataclass(frozen=True)
class SSF:
    """SSF (Lian et al. 2022, arXiv 2210.08823): y = gamma * x + beta after every Linear, LayerNorm and the patch
    embedding's projection of the backbone; only gamma, beta and the head train. No arguments: gamma starts at
    N(1, 0.02) and beta at N(0, 0.02), as the authors' code (dongzelian/SSF models/vision_transformer.py)."""


@dataclass(frozen=True)
class BitFit:
    """BitFit (Ben Zaken et al. 2022, arXiv 2106.10199): every bias term of the backbone, and the head; no arguments."""


@dataclass(frozen=True)
class LnTune:
    """LayerNorm tuning: every LayerNorm's scale and shift, and the head; no arguments."""


CONFIGS = {
    "full": Full,
    "topk": TopK,
    "linear": Linear,
    "lora": Lora,
    "lora_qkv": LoraQKV,
    "block_expansion": BlockExpansion,
    "peft": Peft,
    "lpft": Lpft,
    "l2sp": L2SP,
    "vpt_shallow": VptShallow,
    "vpt_deep": VptDeep,
    "adaptformer": AdaptFormer,
    "ssf": SSF,
    "bitfit": BitFit,
    "ln_tune": LnTune,
}

# method -> its routed view, the pretrained function given back by switching its additions off (evaluation scores the
# source domain through it); a method missing here trains pretrained weights in place and has none.
ROUTED_VIEWS = {
    "lora": "adapters off", "lora_qkv": "adapters off", "peft": "adapters off", "block_expansion": "new blocks out",
    "vpt_shallow": "no prompts", "vpt_deep": "no prompts", "adaptformer": "adapters off",
    "ssf": "scale and shift off (the unmerged model)",
}
# method -> why it has no WiSE-FT interpolation with the pretrained model
NO_INTERPOLATION = {
    "linear": "its backbone never moves",
    "vpt_shallow": "its prompts have no pretrained counterpart to interpolate with",
    "vpt_deep": "its prompts have no pretrained counterpart to interpolate with",
}


def routed_view(method: str) -> str:
    """What `method`'s routed view switches off, in words; a method without one is refused, saying why."""
    if method not in ROUTED_VIEWS:
        why = ("it trains only a head on the pretrained backbone: nothing to switch off" if method == "linear" else
               "it trains pretrained weights in place, so no switch gives the pretrained function back")
        raise VitpeftError(f"method {method!r} has no routed view: {why} (methods with one: {', '.join(ROUTED_VIEWS)})")
    return ROUTED_VIEWS[method]


def interpolates(method: str) -> bool:
    """Whether `method`'s runs have a WiSE-FT interpolation with the pretrained model (if not: NO_INTERPOLATION)."""
    return method not in NO_INTERPOLATION


def config_from_args(method: str, args) -> object:
    """A method's config from a spec's `args`, naming an unknown method or argument."""
    if method not in CONFIGS:
        raise VitpeftError(f"unknown method {method!r} (known: {', '.join(CONFIGS)})")
    config_cls = CONFIGS[method]
    if not isinstance(args, dict):
        raise VitpeftError(f"method {method!r}: args must be a mapping, got {type(args).__name__}")
    if hasattr(config_cls, "from_args"):
        return config_cls.from_args(args)
    allowed = [item.name for item in dataclasses.fields(config_cls)]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise VitpeftError(f"method {method!r}: unknown argument {unknown[0]!r} (allowed: {', '.join(allowed) or 'none'})")
    return config_cls(**args)


def check(method: str, args: dict, depth: int):
    """A method's checked config for a model with `depth` blocks."""
    cfg = config_from_args(method, args)
    if hasattr(cfg, "check_depth"):
        cfg.check_depth(depth)
    return cfg
