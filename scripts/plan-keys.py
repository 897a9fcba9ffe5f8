"""Print every planned output (path and key) of a config, sorted: diff two checkouts' lists to prove keys unchanged.

    PYTHONPATH=src python scripts/plan-keys.py config/config.yaml config/demo.yaml > keys.txt

Works on any checkout since the keyed plan exists: it finds vitpeft's config and
plan modules where that checkout keeps them, and walks every Node the plan holds.
"""

import dataclasses
import importlib
import sys


def _module(*names):
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise SystemExit(f"none of {names} importable")


def nodes(obj, seen=None):
    """Every Node reachable from the plan's attributes (runs, sources, backbones, reports)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if type(obj).__name__ == "Node" and dataclasses.is_dataclass(obj):
        yield obj
        return
    if isinstance(obj, dict):
        for value in obj.values():
            yield from nodes(value, seen)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from nodes(value, seen)
    elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__") and type(obj).__module__.startswith("vitpeft"):
        for value in vars(obj).values():
            yield from nodes(value, seen)


def main(paths) -> None:
    config = _module("vitpeft.study.config", "vitpeft" + ".config")
    plan = _module("vitpeft.study.plan", "vitpeft" + ".plan")
    shapes = None
    try:
        shapes = importlib.import_module("vitpeft.models.shapes")
    except ModuleNotFoundError:
        pass
    for path in paths:
        cfg = config.load(path, describe=shapes.describe) if shapes else config.load(path)
        for node in sorted({(n.path, n.key) for n in nodes(plan.Plan(cfg))}):
            print(path, *node)


if __name__ == "__main__":
    main(sys.argv[1:])
