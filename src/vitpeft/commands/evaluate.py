"""Evaluation subcommands: eval-target (new domain) and eval-source (what the backbone kept)."""

import json

from vitpeft import devices, spec as spec_lib
from vitpeft.fileio import write_json

DINO_KS = [10, 20, 100, 200]
DINO_TEMPERATURE = 0.07


def register(subparsers) -> None:
    target = subparsers.add_parser(
        "eval-target",
        help="accuracy on the target test set",
        description="Top-1/top-5 of the run's classifier on the target test set. Without --run, the pretrained "
        "backbone has no trained head: its weighted k-NN accuracy (bank = spec data.train) is reported instead.",
    )
    _common(target)
    target.add_argument("--data", required=True, help="prepared target test set (e.g. data/cifar100/test)")
    _knn_options(target)
    target.set_defaults(func=_eval_target)

    source = subparsers.add_parser(
        "eval-source",
        help="DINO weighted k-NN on the source domain",
        description="Weighted k-NN accuracy of the (fine-tuned) backbone on prepared source-domain caches, "
        "plus the routed view (LoRA off / new blocks out) where the method has one.",
    )
    _common(source)
    source.add_argument("--bank", required=True, help="prepared bank (e.g. ImageNet train)")
    source.add_argument("--queries", required=True, help="prepared queries (e.g. ImageNet val)")
    _knn_options(source)
    source.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406], help="default: ImageNet's")
    source.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225], help="default: ImageNet's")
    source.set_defaults(func=_eval_source)


def _common(parser) -> None:
    parser.add_argument("--spec", required=True, help="experiment spec YAML")
    parser.add_argument("--run", default=None, help="run folder from `vitpeft train` (default: the pretrained backbone)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--batch-size", type=int, default=256)
    devices.add_option(parser)


def _knn_options(parser) -> None:
    parser.add_argument("--k", type=int, nargs="+", default=DINO_KS, help="neighbour counts (default: DINO's)")
    parser.add_argument("--temperature", type=float, default=DINO_TEMPERATURE)


def _eval_target(args) -> int:
    from vitpeft.evaluate import eval_target  # torch/timm load only when this command runs

    spec = spec_lib.load(args.spec)
    result = eval_target(spec, args.run, args.data, args.device, args.batch_size, args.k, args.temperature)
    return _write(args.out, result)


def _eval_source(args) -> int:
    from vitpeft.evaluate import eval_source

    spec = spec_lib.load(args.spec)
    result = eval_source(
        spec, args.run, args.bank, args.queries, args.k, args.temperature, args.mean, args.std, args.device, args.batch_size
    )
    return _write(args.out, result)


def _write(out, result) -> int:
    write_json(out, result)
    print(json.dumps({key: result[key] for key in ("metric", "top1") if key in result}))
    return 0
