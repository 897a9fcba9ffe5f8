"""`vitpeft params`: trainable parameter counts of every experiment in a workflow config, beside the paper's.

With --cost, what each run would cost at that scale, from the meta device (vitpeft.training.cost): training
FLOPs per image (counted), peak training memory (the analytic estimate) and the stored parameters.
"""

import csv
import io
import sys

from vitpeft.models import presets
from vitpeft.errors import VitpeftError

COLUMNS = ["experiment", "dataset", "method", "trainable", "paper"]
COST_COLUMNS = ["train_flops_per_image", "memory_estimate_bytes", "stored_params"]
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
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument(
        "--model", default=None, metavar="NAME",
        help="count at this timm model's default scale instead of the config's model (e.g. vit_small_patch16_224)",
    )
    scale.add_argument(
        "--preset", default=None, metavar="NAME",
        help=f"count on this backbone preset instead of the config's model (one of: {', '.join(presets.PRESETS)})",
    )
    parser.add_argument(
        "--cost", action="store_true",
        help="also each run's training FLOPs per image (counted by torch's FlopCounterMode on the meta device), its "
        "peak training memory (the estimate `vitpeft check --gpu` makes) and its stored parameters; a few seconds "
        "per experiment at ViT-B",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    rows = count_rows(args.config, args.model, args.preset, cost=args.cost)
    sys.stdout.write(render(rows, args.format))
    return 0


def count_rows(config_path, model_name=None, preset=None, cost=False) -> list:
    """One row per experiment and target dataset (its head): our trainable count, the paper's (None where it has none).

    The specs are the ones the workflow trains (vitpeft.study.plan), for the first
    seed (seeds change no count). `model_name` (a timm model at its default
    size) or `preset` (vitpeft.models.presets) replaces the config's model. `cost` adds COST_COLUMNS.
    """
    from vitpeft.study import config as config_lib
    from vitpeft.methods import registry
    from vitpeft.study.plan import Plan

    model = replacement_model(model_name, preset)  # an unknown name fails before the config is read
    cfg = config_lib.load(config_path)
    paper = config_lib.paper_figures(cfg)
    rows = []
    for (dataset, name, seed), run in Plan(cfg).runs.items():
        if seed != cfg["seeds"][0]:
            continue
        spec = run.spec if model is None else {**run.spec, "model": model}
        try:
            trainable = registry.count_trainable(spec)
        except VitpeftError as error:
            raise VitpeftError(f"experiment {name!r}: {error}") from None
        rows.append({
            "experiment": name,
            "dataset": dataset,
            "method": run.method,
            "trainable": trainable,
            "paper": paper.get(name, {}).get("params"),
            **(costs(spec) if cost else {}),
        })
    return rows


def costs(spec: dict) -> dict:
    from vitpeft.training import cost

    record = cost.record(spec)
    return {column: record[column] for column in COST_COLUMNS}


def replacement_model(model_name=None, preset=None):
    """The spec `model` section that --model or --preset asks for; None keeps the config's."""
    if preset is not None:
        return presets.model_cfg(preset)
    if model_name is not None:
        return default_model_cfg(model_name)
    return None


def default_model_cfg(name: str) -> dict:
    """A spec `model` section for timm model `name` at its pretrained input size."""
    from timm.models import get_pretrained_cfg_value, is_model

    if not is_model(name):
        raise VitpeftError(f"--model: timm has no model {name!r}")
    input_size = get_pretrained_cfg_value(name, "input_size") or (3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE)
    return {"name": name, "img_size": input_size[-1], "kwargs": {}}


def render(rows: list, fmt: str) -> str:
    columns = COLUMNS + (COST_COLUMNS if rows and COST_COLUMNS[0] in rows[0] else [])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "paper": "" if row["paper"] is None else row["paper"]} for row in rows)
        return out.getvalue()
    from tabulate import tabulate

    from vitpeft.report.tables import human_bytes, human_flops

    shown = {"train_flops_per_image": human_flops, "memory_estimate_bytes": human_bytes, "stored_params": _thousands}
    table = [[row["experiment"], row["dataset"], row["method"], _thousands(row["trainable"]), _thousands(row["paper"]),
              *(shown[column](row[column]) for column in columns[len(COLUMNS):])] for row in rows]
    headers = COLUMNS + ["train FLOPs/img", "memory (estimate)", "stored"][:len(columns) - len(COLUMNS)]
    return tabulate(table, headers=headers, colalign=("left", "left", "left") + ("right",) * (len(headers) - 3),
                    disable_numparse=True) + "\n"


def _thousands(count) -> str:
    return "-" if count is None else f"{count:,}"
