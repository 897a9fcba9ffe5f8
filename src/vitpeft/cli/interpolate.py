"""`vitpeft eval-interpolation` (a run's WiSE-FT-style interpolation curve) and `vitpeft eval-wise` (its chosen alpha,
scored on the whole source bank): vitpeft.evaluation.interpolation."""

import json

from vitpeft.cli import specs
from vitpeft.cli.evaluate import _knn_options, _source_options, resumable_option
from vitpeft.digests import write_json
from vitpeft.errors import VitpeftError
from vitpeft.training import devices


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval-interpolation",
        help="a run interpolated with the pretrained model: target top-1 and source k-NN at every alpha",
        description="One model load: for each alpha (0 = the pretrained backbone or routed view, 1 = the run), "
        "theta_alpha as vitpeft.methods.interpolation defines it for the run's method, the run's own head at every "
        "alpha; the target top-1 and the source k-NN (every k) on the given (usually subsampled) bank and queries.",
    )
    specs.add_options(parser)
    parser.add_argument("--run", required=True, help="run folder from `vitpeft train`")
    parser.add_argument("--target-data", required=True, metavar="DIR", help="prepared target test set")
    parser.add_argument("--alphas", required=True, type=float, nargs="+", metavar="A", help="the grid, each in [0, 1]")
    _source_options(parser, required=False)
    parser.add_argument("--source-data", default="given", metavar="TEXT",
                        help="what the bank and queries are, recorded in the output (e.g. 'subsample: 100 per class')")
    _knn_options(parser)
    parser.add_argument("--out", required=True, metavar="JSON", help="interpolation JSON to write")
    devices.add_batch_option(parser)
    resumable_option(parser)
    devices.add_option(parser)
    parser.set_defaults(func=_run)

    wise = subparsers.add_parser(
        "eval-wise",
        help="a run at the alpha chosen from its interpolation sweep: source k-NN on the whole bank",
        description="Reads the run's sweep (eval-interpolation's JSON), chooses the alpha of the highest "
        "(target + source) / 2 with the target on the held-out data (--choose-on validation: the validation split "
        "or the slice of train the run did not train on) or on the test split (--choose-on test: an upper bound), "
        "the source on the sweep's subsample, ties to the larger alpha; then scores the source k-NN (every k) of the "
        "run at that alpha on the given, whole, bank and queries. The JSON records the choice and its data.",
    )
    specs.add_options(wise)
    wise.add_argument("--run", required=True, help="run folder from `vitpeft train`")
    wise.add_argument("--sweep", required=True, metavar="JSON", help="the run's `vitpeft eval-interpolation` output")
    wise.add_argument("--choose-on", required=True, choices=["validation", "test"])
    _source_options(wise)
    _knn_options(wise)
    wise.add_argument("--out", required=True, metavar="JSON", help="metrics JSON to write")
    devices.add_batch_option(wise)
    resumable_option(wise)
    devices.add_option(wise)
    wise.set_defaults(func=_wise)


def _wise(args) -> int:
    from vitpeft.evaluation.interpolation import eval_wise

    spec = specs.spec_from(args)
    result = eval_wise(
        spec, args.run, args.sweep, args.choose_on, args.bank, args.queries, args.k, args.temperature, args.mean,
        args.std, args.device, args.batch_size, args.precision,
    )  # fmt: skip
    write_json(args.out, result)
    print(json.dumps({"alpha": result["alpha"], "target_acc": result["target_acc"], "source_acc": result["top1"]}))
    return 0


def _run(args) -> int:
    from vitpeft.evaluation.interpolation import eval_interpolation

    if (args.bank is None) != (args.queries is None):
        raise VitpeftError("give --bank and --queries together (or neither, to score the target only)")
    spec = specs.spec_from(args)
    result = eval_interpolation(
        spec, args.run, args.target_data, args.alphas, args.bank, args.queries, args.k, args.temperature, args.mean,
        args.std, args.device, args.batch_size, args.precision, args.source_data,
    )  # fmt: skip
    write_json(args.out, result)
    print(json.dumps([[point["alpha"], point["target_acc"], point["source_acc"]] for point in result["points"]]))
    return 0
