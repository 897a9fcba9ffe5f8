"""`vitpeft eval-interpolation`: a run's WiSE-FT-style interpolation curve (vitpeft.evaluation.interpolation)."""

import json

from vitpeft.cli import specs
from vitpeft.cli.evaluate import _knn_options, _source_options
from vitpeft.errors import VitpeftError
from vitpeft.fileio import write_json
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
    parser.add_argument("--batch-size", type=int, default=256)
    devices.add_option(parser)
    parser.set_defaults(func=_run)


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
