"""`vitpeft params`: trainable parameter counts of every experiment in a workflow config, beside the paper's."""

import copy
import csv
import io
import sys
from pathlib import Path

import yaml

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
    raw = _countable(config_path)  # a bad path fails before torch, timm and peft load
    from vitpeft import config as config_lib
    from vitpeft import methods

    try:
        cfg = config_lib.load(raw)
    except VitpeftError as error:
        raise VitpeftError(f"{config_path}: {error}") from None  # load() of a dict cannot name the file
    specs = config_lib.experiment_specs(cfg)
    paper = config_lib.paper_figures(cfg)
    rows = []
    for name, spec in specs.items():
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


def _countable(config_path) -> dict:
    """The config as a dict, with the checks that its data exists switched off: counting needs no data.

    (config.load refuses config/config.yaml until ImageNet is pointed at; the
    counts must be available before that.)
    """
    path = Path(config_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VitpeftError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise VitpeftError(f"{path.name} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise VitpeftError(f"{path.name}: expected a mapping at the top level")
    raw = copy.deepcopy(raw)
    raw.setdefault("source", {})["enabled"] = False  # no ImageNet needed
    raw.setdefault("backbone", {})["pretrain"] = True  # no checkpoint needed
    return raw


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
