"""The offline demo's own inputs: `make-synthetic` (the two domains) and `pretrain` (the stand-in for DINO)."""

import sys

from vitpeft.training import devices


def register(subparsers) -> None:
    synthetic = subparsers.add_parser(
        "make-synthetic",
        help="write the demo's synthetic source and target domains",
        description="Generate the procedural domains from the config's `synthetic` section and write "
        "OUT/source/{train,test} and OUT/target/{train,test} (prepared-dataset format).",
    )
    synthetic.add_argument("--config", required=True, help="workflow config YAML (its `synthetic` section)")
    synthetic.add_argument("--out", required=True, help="folder to write (appears whole or not at all)")
    synthetic.set_defaults(func=_make_synthetic)

    pretrain = subparsers.add_parser(
        "pretrain",
        help="pretrain the demo's tiny ViT on the synthetic source domain",
        description="Supervised pretraining of the config's backbone.model on DATA (the source train split is "
        "DATA/train), saved without its head as safetensors, like DINO's backbone file.",
    )
    pretrain.add_argument("--config", required=True, help="workflow config YAML (its `pretrain` and `backbone.model`)")
    pretrain.add_argument("--data", required=True, help="the synthetic source domain folder (holding train/)")
    pretrain.add_argument("--out", required=True, help="backbone checkpoint to write (.safetensors)")
    devices.add_option(pretrain)
    pretrain.set_defaults(func=_pretrain)


def _make_synthetic(args) -> int:
    from vitpeft.study import config
    from vitpeft.models import shapes
    from vitpeft.data import synthetic
    from vitpeft.fileio import atomic_path

    cfg = config.load(args.config, describe=shapes.describe)
    domains = synthetic.make_domains(cfg["synthetic"])
    with atomic_path(args.out) as tmp:  # all four splits appear together or not at all
        synthetic.write_domains(domains, tmp)
    sizes = ", ".join(f"{d}: {len(tr)} train / {len(te)} test" for d, (tr, te) in domains.items())
    print(f"vitpeft make-synthetic: wrote {args.out} ({sizes})", file=sys.stderr)
    return 0


def _pretrain(args) -> int:
    from pathlib import Path

    from vitpeft.study import config

    from vitpeft.models import shapes
    from vitpeft.models import pretrain
    from vitpeft.errors import VitpeftError

    if Path(args.out).suffix != ".safetensors":
        raise VitpeftError(f"--out {args.out}: the backbone is written as safetensors; name it *.safetensors")
    cfg = config.load(args.config, describe=shapes.describe)
    train_dir = Path(args.data) / "train"
    if not train_dir.is_dir():
        raise VitpeftError(f"--data {args.data}: no train/ split inside (run `vitpeft make-synthetic` first)")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    model = pretrain.pretrain(cfg["pretrain"], cfg["backbone"]["model"], train_dir, devices.pick(args.device), log)
    pretrain.save_backbone(model, args.out)
    log(f"vitpeft pretrain: wrote {args.out}")
    return 0
