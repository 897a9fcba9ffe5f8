"""Evaluation subcommands: eval-target (new domain), eval-source (what the backbone kept), extract-features
(the untouched backbone's source features, once), subsample (a class-balanced subset) and eval-curve (a run's
forgetting curve)."""

import hashlib
import json
from pathlib import Path

from vitpeft.training import devices
from vitpeft.training.resume import EXIT_PREEMPTED
from vitpeft.models.presets import IMAGENET_MEAN, IMAGENET_STD
from vitpeft.cli import specs
from vitpeft.digests import write_json
from vitpeft.errors import VitpeftError

DINO_KS = [10, 20, 100, 200]
DINO_TEMPERATURE = 0.07
PRECISIONS = ["fp32", "fp16"]  # vitpeft.evaluation.knn.STORAGE, without importing torch to parse arguments


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
        "plus the routed view (LoRA off / new blocks out) where the method has one. With --pretrained-features, "
        "the untouched backbone's features (routed view; shared view of `linear` or without --run) come from that "
        "cache when its provenance matches, and are recomputed (with a log line saying why) when it does not.",
    )
    _common(source)
    _source_options(source)
    _knn_options(source)
    source.add_argument("--pretrained-features", metavar="DIR", default=None,
                        help="feature cache written by `vitpeft extract-features`")
    source.set_defaults(func=_eval_source)

    extract = subparsers.add_parser(
        "extract-features",
        help="the untouched backbone's source features, once, with their provenance",
        description="Write the pretrained backbone's features of the bank and queries, their labels and "
        "provenance.json (checkpoint sha256, model, preprocessing, bank/queries identity, precision) to DIR, "
        "atomically, for eval-source --pretrained-features.",
    )
    specs.add_options(extract)
    _source_options(extract)
    extract.add_argument("--out", required=True, metavar="DIR", help="cache folder to write")
    devices.add_batch_option(extract)
    resumable_option(extract)
    devices.add_option(extract)
    extract.set_defaults(func=_extract_features)

    subsample = subparsers.add_parser(
        "subsample",
        help="a class-balanced subset of a prepared dataset",
        description="The first K images of every class in a seeded random order, written in the store format "
        "(atomically). Refuses K larger than the smallest class.",
    )
    subsample.add_argument("--data", required=True, metavar="DIR", help="prepared dataset (e.g. the source bank)")
    subsample.add_argument("--per-class", required=True, type=int, metavar="K")
    subsample.add_argument("--out", required=True, metavar="DIR")
    subsample.add_argument("--seed", type=int, default=0)
    subsample.set_defaults(func=_subsample)

    curve = subparsers.add_parser(
        "eval-curve",
        help="a run's forgetting curve: target top-1 and source k-NN at every saved step",
        description="One model load: for each RUN/curve/step_*.safetensors in step order, then the final "
        "RUN/trainable.safetensors (its selected step, final: true), the target top-1 of the run's head and the "
        "source k-NN (every k) on the given (usually subsampled) bank and queries.",
    )
    specs.add_options(curve)
    curve.add_argument("--run", required=True, help="run folder from `vitpeft train`")
    curve.add_argument("--target-data", required=True, metavar="DIR", help="prepared target test set")
    _source_options(curve, required=False)
    _knn_options(curve)
    curve.add_argument("--out", required=True, metavar="JSON", help="curve JSON to write")
    devices.add_batch_option(curve)
    resumable_option(curve)
    devices.add_option(curve)
    curve.set_defaults(func=_eval_curve)


def resumable_option(parser) -> None:
    """--resume-dir for an evaluation: its image passes survive SLURM's warning signal (vitpeft.evaluation.passes)."""
    parser.add_argument(
        "--resume-dir", default=None, metavar="DIR",
        help="make the job resumable: on SIGTERM/SIGUSR1 save the image passes made so far under DIR and exit "
        f"{EXIT_PREEMPTED}; the same command then goes on where it stopped (default: not resumable)")
    parser.set_defaults(resumable_passes=True)


def passes_folder(args) -> Path:
    """One folder per evaluation job under --resume-dir: named by its command and a hash of all its arguments."""
    settings = {key: value for key, value in vars(args).items() if key not in ("func", "resume_dir")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(args.resume_dir) / f"{args.command}-{digest}"


def _common(parser) -> None:
    specs.add_options(parser)
    resumable_option(parser)
    parser.add_argument("--run", default=None,
                        help="run folder from `vitpeft train` (default: the pretrained backbone)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    devices.add_batch_option(parser)
    devices.add_option(parser)


def _source_options(parser, required=True) -> None:
    optional = "" if required else "; leave out (with --queries) to score the target only"
    parser.add_argument("--bank", required=required, metavar="DIR", help=f"prepared bank (e.g. ImageNet train){optional}")
    parser.add_argument("--queries", required=required, metavar="DIR", help="prepared queries (e.g. ImageNet val)")
    parser.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, help="default: ImageNet's")
    parser.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, help="default: ImageNet's")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="how features are kept for the vote (normalised in fp32 first); default fp32")


def _knn_options(parser) -> None:
    parser.add_argument("--k", type=int, nargs="+", default=DINO_KS, help="neighbour counts (default: DINO's)")
    parser.add_argument("--temperature", type=float, default=DINO_TEMPERATURE)


def _eval_target(args) -> int:
    from vitpeft.evaluation.evaluate import eval_target  # torch/timm load only when this command runs

    spec = specs.spec_from(args)
    result = eval_target(spec, args.run, args.data, args.device, args.batch_size, args.k, args.temperature)
    return _write(args.out, result)


def _eval_source(args) -> int:
    from vitpeft.evaluation.evaluate import eval_source

    spec = specs.spec_from(args)
    result = eval_source(
        spec, args.run, args.bank, args.queries, args.k, args.temperature, args.mean, args.std, args.device,
        args.batch_size, args.precision, args.pretrained_features,
    )  # fmt: skip
    return _write(args.out, result)


def _extract_features(args) -> int:
    from vitpeft.evaluation import features

    spec = specs.spec_from(args)
    data = features.load_source(args.bank, args.queries, args.mean, args.std, args.precision)
    features.extract_pretrained(spec, data, args.out, devices.pick(args.device), args.batch_size)
    print(f"wrote {args.out}")
    return 0


def _subsample(args) -> int:
    from vitpeft.data import subset

    count = subset.write(args.data, args.per_class, args.out, args.seed)
    print(f"wrote {args.out}: {count} images, {args.per_class} per class")
    return 0


def _eval_curve(args) -> int:
    from vitpeft.evaluation.curve import eval_curve

    if (args.bank is None) != (args.queries is None):
        raise VitpeftError("give --bank and --queries together (or neither, to score the target only)")
    spec = specs.spec_from(args)
    result = eval_curve(
        spec, args.run, args.target_data, args.bank, args.queries, args.k, args.temperature, args.mean, args.std,
        args.device, args.batch_size, args.precision,
    )  # fmt: skip
    write_json(args.out, result)
    final = result["points"][-1]
    print(json.dumps({"points": len(result["points"]), "final_target_acc": final["target_acc"],
                      "final_source_acc": final["source_acc"]}))  # fmt: skip
    return 0


def _write(out, result) -> int:
    write_json(out, result)
    print(json.dumps({key: result[key] for key in ("metric", "top1") if key in result}))
    return 0
