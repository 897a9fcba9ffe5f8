"""`vitpeft params`: trainable parameter counts of every experiment in a workflow config, beside the paper's."""

import csv
import io
import sys

from vitpeft.errors import VitpeftError

COLUMNS = ["experiment", "method", "trainable", "paper"]
DEFAULT_IMG_SIZE = 224


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "params",
        help="trainable parameter counts of every experiment",
        description=(
            "Count the trainable parameters of every experiment in a workflow config (on the meta device: "
            "no weights, no memory), next to the paper's figure where it gives one."
        ),
    )
    parser.add_argument("--config", required=True, help="workflow config YAML (e.g. config/config.yaml)")
    parser.add_argument("--format", default="table", choices=["table", "csv"], help="output format (default table)")
    parser.add_argument(
        "--model", default=None, metavar="NAME",
        help="count at this timm model's default scale instead of the config's model (e.g. vit_small_patch16_224)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    rows = count_rows(args.config, args.model)
    sys.stdout.write(render(rows, args.format))
    return 0


def count_rows(config_path, model_name=None) -> list:
    """One row per experiment: name, method, our trainable count, the paper's (None where it has none)."""
    from vitpeft import config as config_lib
    from vitpeft import methods

    cfg = config_lib.load(config_path, check_files=False)  # counting needs neither ImageNet nor the checkpoint
    paper = config_lib.paper_figures(cfg)
    rows = []
    for name, spec in config_lib.experiment_specs(cfg).items():
        if model_name is not None:
            spec = {**spec, "model": default_model_cfg(model_name)}
        try:
            trainable = methods.count_trainable(spec)
        except VitpeftError as error:
            raise VitpeftError(f"experiment {name!r}: {error}") from None
        rows.append({
            "experiment": name,
            "method": spec["method"],
            "trainable": trainable,
            "paper": paper.get(name, {}).get("params"),
        })
    return rows


def default_model_cfg(name: str) -> dict:
    """A spec `model` section for timm model `name` at its pretrained input size."""
    from timm.models import get_pretrained_cfg_value, is_model

    if not is_model(name):
        raise VitpeftError(f"--model: timm has no model {name!r}")
    input_size = get_pretrained_cfg_value(name, "input_size") or (3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE)
    return {"name": name, "img_size": input_size[-1], "kwargs": {}}


def render(rows: list, fmt: str) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "paper": "" if row["paper"] is None else row["paper"]} for row in rows)
        return out.getvalue()
    from tabulate import tabulate

    table = [[row["experiment"], row["method"], _thousands(row["trainable"]), _thousands(row["paper"])] for row in rows]
    return tabulate(table, headers=COLUMNS, colalign=("left", "left", "right", "right"), disable_numparse=True) + "\n"


def _thousands(count) -> str:
    return "-" if count is None else f"{count:,}"
