"""Keys: the hash in every output's name, the node that carries it, and what makes two trainings one.

A key is the first 12 hex digits of the SHA-256 of everything an output
depends on (vitpeft.study.plan explains why). Two parts of a study can plan
the same output: the grid and a task sequence's first step, two experiments
that differ only by name, two chains that share their first step. `Outputs`
gives each of them one node, so it is one job, one key and one folder, read
by every part that needs it. Torch-free, like the rest of planning.
"""

import copy
import hashlib
import json
from dataclasses import dataclass, field

KEY_DIGITS = 12
NOT_THE_TRAINING = ("name", "start")  # a run's label and where its start lives: the same training under either
NOT_THE_WEIGHTS = ("curve_steps",)  # which snapshots training keeps along the way: never the weights it ends with


def key_of(*material) -> str:
    """The key of an output: a hash of the canonical JSON of everything it depends on."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


@dataclass(frozen=True)
class Node:
    """One job's output: its key, where it lives, and the upstream outputs it reads."""

    key: str
    path: str
    needs: tuple = ()
    info: dict = field(default_factory=dict, compare=False)

    @property
    def output(self) -> str:
        """What the job that makes this node declares as its output (a folder holding `path`, or `path`)."""
        return self.info.get("output", self.path)


def without_paths(spec: dict) -> dict:
    """A spec minus the paths it holds: keys hash content (their upstream keys), not where files live."""
    spec = copy.deepcopy(spec)
    spec["checkpoint"] = None
    for split in ("train", "val", "test"):
        spec["data"][split] = bool(spec["data"][split])
    return spec


def recipe(spec: dict, data: Node, backbone: Node, start: Node | None = None) -> str:
    """What a training computes, whoever plans it: the hash of its spec without its name, paths, curve steps
    and start folder, with the keys of its data, backbone and starting run. Equal recipes train equal bits
    (the seed is in the spec; tests/test_sequence.py checks a sequence's first step against the grid's run)."""
    settings = without_paths({key: value for key, value in spec.items() if key not in NOT_THE_TRAINING})
    settings["train"] = {key: value for key, value in settings["train"].items() if key not in NOT_THE_WEIGHTS}
    return key_of("recipe", settings, data.key, backbone.key, start.key if start is not None else None)


class Outputs:
    """Every output of a study planned once: nodes by key, trainings by recipe; the first one planned is kept.

    A training kept for several recipes' owners must keep every curve snapshot any of them reads, so a node
    planned with curve steps is registered before one without (the grid before a task sequence).
    """

    def __init__(self):
        self._by_key, self._by_recipe = {}, {}

    def node(self, node: Node) -> Node:
        """`node`, or the node already planned with its key (the same output: its key hashes all it depends on)."""
        return self._by_key.setdefault(node.key, node)

    def training(self, recipe_key: str, node: Node) -> Node:
        """`node`, or the training already planned with the same recipe (one job, one folder, read by both)."""
        kept = self._by_recipe.setdefault(recipe_key, node)
        return self.node(kept)
