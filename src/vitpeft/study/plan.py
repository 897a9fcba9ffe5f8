"""A study as jobs: what each job reads, where it writes, and the key in its output's name.

Every output path holds a key: the first 12 hex digits of the SHA-256 of
everything that determines that output, its settings and the keys of the
jobs it reads. A change anywhere gives new keys to exactly the outputs it
affects, so Snakemake runs exactly the jobs whose output is missing; file
dates never matter (every input is ancient()), which is why a fresh clone,
a `dvc pull` or a copy reruns nothing, and why planning writes nothing.

What two parts of the study both need is planned once (vitpeft.study.keys.Outputs):
two experiments that train the same bits under two names share one run, and a
task sequence (vitpeft.study.sequence, built here on top of the grid) reads the
grid's run wherever one of its steps trains what the grid trains. When several
experiments plan one training, its folder is that of the experiment whose name
sorts first, so reordering the config's list moves nothing.

Pure Python: the workflow builds a Plan while Snakemake parses, and every job
rebuilds it from the same config to find its settings (and checks the key it
was given, so a config edited under a running workflow is refused, not mixed).
Planning has one direction: plan -> sequence -> config, spec, keys (an
import-linter contract in pyproject.toml keeps it so).
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vitpeft.errors import VitpeftError
from vitpeft.methods import arguments
from vitpeft.methods.arguments import HEAD_ONLY
from vitpeft.study import spec as spec_lib
from vitpeft.study.config import PRETRAINED, merged_train
from vitpeft.study.keys import Node, Outputs, key_of, recipe, without_paths
from vitpeft.study.paths import inside
from vitpeft.study.sequence import Sequence

UNTOUCHED = HEAD_ONLY  # methods that train only a head: the backbone stays the pretrained one
ROUTED = set(arguments.ROUTED_VIEWS)  # methods with a routed view (the pretrained path)


@dataclass(frozen=True)
class Run:
    """One training run (dataset x experiment x seed) and the evaluations of its result."""

    dataset: str
    experiment: str
    seed: int
    method: str
    spec: dict = field(compare=False)
    train: Node = field(compare=False)
    target: Node = field(compare=False)
    source: Node | None = field(compare=False)  # None: source off (linear's is the pretrained one)
    curve: Node | None = field(compare=False)
    interpolation: Node | None = field(default=None, compare=False)  # None: interpolation off, or a linear probe
    wise: Node | None = field(default=None, compare=False)  # the chosen alpha's whole-bank source k-NN; None: no source

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.experiment}/seed{self.seed}"


class Plan:
    """Every job of one study, keyed; built from a config that vitpeft.study.config.load resolved."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.name = cfg["name"]
        self.results = inside("results", self.name)
        self.data = str(PurePosixPath(cfg["data_dir"]))
        self.cache = str(PurePosixPath(cfg["cache_dir"]))
        self.knn = {key: cfg["source"][key] for key in ("k", "temperature", "mean", "std", "precision")}
        self.interpolates = cfg["interpolation"]["enabled"]
        self.choose_on = cfg["interpolation"]["choose_on"]
        self.synthetic = self._synthetic()
        self.backbone = self._backbone()
        self.targets = {name: self._target(name) for name in cfg["target"]["datasets"]}
        self.source = self._source()
        self.features = self._features()
        self.curve_data = self._curve_data()
        self.pretrained_source = self._pretrained_source()
        self.pretrained_target = {name: self._pretrained_target(name) for name in self.targets}
        self.outputs = Outputs()
        planned = {(dataset, exp["name"], seed): self._run(dataset, exp, seed)
                   for dataset in self.targets for exp in by_name(cfg["experiments"]) for seed in cfg["seeds"]}
        self.runs = {(dataset, exp["name"], seed): planned[(dataset, exp["name"], seed)]
                     for dataset in self.targets for exp in cfg["experiments"] for seed in cfg["seeds"]}
        self.report = self._report()
        self.sequence = Sequence(self) if cfg.get("sequence") is not None else None

    # ---------------------------------------------------------------- data and backbone

    def _synthetic(self) -> Node | None:
        if "synthetic" not in (*self.cfg["target"]["datasets"], self.cfg["source"]["dataset"]):
            return None
        key = key_of("synthetic", self.cfg["synthetic"])
        return Node(key, inside(self.data, "synthetic", key))

    def _backbone(self) -> Node:
        backbone = self.cfg["backbone"]
        if backbone["pretrain"]:
            key = key_of("pretrain", backbone["model"], self.cfg["pretrain"], self.synthetic.key)
            folder = inside(self.data, "backbone", key)
            return Node(key, f"{folder}/pretrained.safetensors", (self.synthetic,), {"rule": "pretrain", "layout": "timm"})
        layout = backbone["layout"]
        if backbone["checkpoint"]:
            key = key_of("local", backbone["checkpoint"], backbone["sha256"], layout)
            return Node(key, backbone["checkpoint"], (), {"rule": None, "layout": layout})
        if backbone["timm_hub"]:
            key = key_of("timm_hub", backbone["timm_hub"], layout)
            name = backbone["timm_hub"].replace("/", "_") + ".safetensors"
        else:  # config.load refused a backbone with no source of weights
            key = key_of("url", backbone["url"], backbone["sha256"], layout)
            name = PurePosixPath(backbone["url"].split("?")[0]).name or "checkpoint.pth"
        folder = inside(self.data, "backbone", key)
        return Node(key, f"{folder}/{_checkpoint_name(name)}", (), {"rule": "fetch", "layout": layout})

    def dataset(self, name: str) -> Node:
        """The prepared data node of any dataset the config can name (a grid target's is the same node)."""
        return self.targets[name] if name in self.targets else self._target(name)

    def _target(self, name: str) -> Node:
        if name == "synthetic":
            return Node(self.synthetic.key, f"{self.synthetic.path}/target", (self.synthetic,),
                        {"kind": "synthetic", "num_classes": self.cfg["synthetic"]["target_classes"], "val": False,
                         "output": self.synthetic.path})
        info = target_facts(self.cfg["target"], name)
        if info["kind"] != "imagefolder":
            info["downloads"] = inside(self.data, "downloads", name)
        settings = {key: info[key] for key in ("kind", "num_classes", "size", "md5", "root")}
        key = key_of("target", name, settings)  # a mirror's URL is a place: not in the key
        return Node(key, inside(self.data, "targets", name, key), (), info)

    def _source(self) -> Node | None:
        source = self.cfg["source"]
        if not source["enabled"]:
            return None
        if source["dataset"] == "synthetic":
            path = f"{self.synthetic.path}/source"
            return Node(self.synthetic.key, path, (self.synthetic,),
                        {"bank": f"{path}/train", "queries": f"{path}/test", "output": self.synthetic.path})
        settings = {key: source[key] for key in ("bank_per_class", "query_per_class", "resize", "crop", "shards",
                                                 "query_shards")}
        key = key_of("imagenet", settings)  # imagenet_dir left out: the same images elsewhere are the same bank
        path = inside(self.cache, "imagenet", key)
        # Shard jobs write bank/ and queries/ shard folders; the index job's meta.json marks the whole as done.
        shards = {"bank": source["shards"], "queries": source["query_shards"]}
        return Node(key, path, (), {"bank": f"{path}/bank", "queries": f"{path}/queries",
                                    "output": f"{path}/bank/meta.json", "shards": shards})

    def imagenet_shards(self) -> list:
        """The folder each ImageNet shard job writes (vitpeft.data.imagenet's layout)."""
        if self.source is None or "shards" not in self.source.info:
            return []
        from vitpeft.data.imagenet import shard_name  # numpy and PIL: imported only when ImageNet is planned

        return [f"{self.source.path}/{part}/{shard_name(index, count)}"
                for part, count in self.source.info["shards"].items() for index in range(count)]

    def _features(self) -> Node | None:
        """The untouched backbone's source features, extracted once for every row that uses them."""
        if self.source is None:
            return None
        model = self.cfg["backbone"]["model"]
        key = key_of("features", self.backbone.key, self.source.key, model, self.knn["mean"], self.knn["std"],
                     self.knn["precision"])
        return Node(key, inside(self.cache, "features", key), (self.backbone, self.source))

    def _curve_data(self) -> Node | None:
        """The class-balanced source subsample every curve point and every interpolation alpha is scored on."""
        curve = self.cfg["curve"]
        if not (curve["steps"] or self.interpolates) or self.source is None:
            return None
        key = key_of("subset", self.source.key, curve["bank_per_class"], curve["query_per_class"])
        path = inside(self.cache, "subsets", key)
        return Node(key, path, (self.source,), {"bank": f"{path}/bank", "queries": f"{path}/queries"})

    # ---------------------------------------------------------------- the untouched backbone's rows

    def _pretrained_source(self) -> Node | None:
        if self.features is None:
            return None
        key = key_of("eval_source", PRETRAINED, self.features.key, self.knn)
        return Node(key, f"{inside(self.results, 'metrics', PRETRAINED)}/source-{key}.json", (self.features,))

    def _pretrained_target(self, dataset: str) -> Node:
        target = self.targets[dataset]
        vote = {key: self.knn[key] for key in ("k", "temperature")}  # target normalisation: the spec's, not the source's
        key = key_of("eval_target", PRETRAINED, self.backbone.key, target.key, vote)
        folder = inside(self.results, "metrics", dataset, PRETRAINED)
        return Node(key, f"{folder}/target-{key}.json", (self.backbone, target))

    def pretrained_spec(self, dataset: str | None = None) -> dict:
        """The untouched backbone as a spec (method linear; never trained, so default training settings)."""
        dataset = dataset or next(iter(self.targets))
        return spec_lib.resolve(spec_lib.build(self.cfg, self.backbone, self.targets[dataset], PRETRAINED, "linear", {},
                                               {"seed": 0}))

    # ---------------------------------------------------------------- runs

    def _run(self, dataset: str, exp: dict, seed: int) -> Run:
        train = {**merged_train(self.cfg, exp), "seed": seed, "curve_steps": self.curve_steps()}
        target_data = self.targets[dataset]
        if self.holds_out(target_data, train):
            train["hold_out"] = True
        spec = self.spec(target_data, exp["name"], exp["method"], exp["args"], train, f"{dataset}/{exp['name']}/seed{seed}")
        key = key_of("train", without_paths(spec), target_data.key, self.backbone.key)
        folder = f"{inside(self.results, 'runs', dataset, exp['name'])}/seed{seed}-{key}"
        trained = self.outputs.training(recipe(spec, target_data, self.backbone),
                                        Node(key, folder, (target_data, self.backbone), {"spec": spec}))
        spec = trained.info["spec"]  # the spec that trains the shared run (another experiment's name, same bits)
        metrics = f"{inside(self.results, 'metrics', dataset, exp['name'])}/seed{seed}"
        target = self._keyed(f"{metrics}/target", "eval_target", trained, target_data)
        source = None
        if self.source is not None and exp["method"] not in UNTOUCHED:
            source = self._keyed(f"{metrics}/source", "eval_source", trained, self.features, self.knn)
        curve = None
        if self.cfg["curve"]["steps"]:
            curve = self._keyed(f"{metrics}/curve", "eval_curve", trained, target_data, self.curve_data, self.knn)
        interpolation = wise = None
        if self.interpolates and arguments.interpolates(exp["method"]):  # not linear's untouched backbone, nor VPT
            alphas = self.cfg["interpolation"]["alphas"]
            # "validation": the sweep also scores the held-out target data the alpha is chosen on
            interpolation = self._keyed(f"{metrics}/interpolation", "eval_interpolation", trained, target_data,
                                        self.curve_data, self.knn, alphas, "validation")
            if self.source is not None:  # no source score, no (target + source) / 2 to choose an alpha by
                wise = self._keyed(f"{metrics}/wise", "eval_wise", interpolation, self.source, self.knn, self.choose_on)
        return Run(dataset, exp["name"], seed, exp["method"], spec, trained, target, source, curve, interpolation, wise)

    def holds_out(self, target: Node, train: dict) -> bool:
        """Whether runs on `target` train without the validation slice: their alphas are chosen on it (no
        validation split) and best_val does not hold it out already. Every run on a grid dataset (a sequence's
        step on one too), so every row of the table trained on the same images."""
        return (target in self.targets.values() and self.interpolates and self.choose_on == "validation" and not target.info.get("val")
                and train["selection"] != "best_val")

    def _keyed(self, stem: str, rule: str, *needs) -> Node:
        key = key_of(rule, *[need.key if isinstance(need, Node) else need for need in needs])
        return self.outputs.node(Node(key, f"{stem}-{key}.json", tuple(need for need in needs if isinstance(need, Node))))

    def spec(self, target: Node, name: str, method: str, args: dict, train: dict, where: str) -> dict:
        """A run's spec on the dataset `target` (its node), its relations checked, naming the run as `where`."""
        raw = spec_lib.build(self.cfg, self.backbone, target, name, method, args, train)
        # Every key is filled from the validated config: only the relations between keys need checking here
        # (spec_lib.resolve would validate the whole spec again, a cost that grows with the grid).
        spec_lib.check_relations(raw, where=where)
        return raw

    def curve_steps(self) -> list:
        """The steps whose weights training keeps: the config's, plus 0 (the untouched model) when there are any."""
        steps = self.cfg["curve"]["steps"]
        return sorted({0, *steps}) if steps else []

    def source_metrics(self, run: Run) -> Node | None:
        """The source score of a run: its own, or the untouched backbone's when training left it so."""
        return run.source if run.method not in UNTOUCHED else self.pretrained_source

    def find(self, dataset: str, experiment: str, seed, key: str | None = None) -> Run:
        """The run a job's wildcards name; a key that is not the planned one means the config changed."""
        run = self.runs.get((dataset, experiment, int(seed)))
        if run is None:
            raise VitpeftError(f"no run {dataset}/{experiment}/seed{seed} in study {self.name!r}")
        if key is not None and key != run.train.key:
            raise VitpeftError(
                f"{run.label}: the config changed since this job was planned (key {key}, now {run.train.key}); "
                "rerun snakemake to plan again"
            )
        return run

    def evaluated(self, column: str, dataset: str, experiment: str, seed, key: str) -> Run:
        """The run whose `column` evaluation (target, source, curve or interpolation) has output key `key`."""
        run = self.find(dataset, experiment, seed)
        node = getattr(run, column)
        if node is None or node.key != key:
            raise VitpeftError(f"{run.label}: no planned {column} evaluation with key {key}; rerun snakemake")
        return run

    # ---------------------------------------------------------------- the report

    def _report(self) -> Node:
        keys = [run.train.key for run in self.runs.values()]
        keys += [node.key for run in self.runs.values() for node in (run.target, run.source, run.curve) if node]
        keys += [node.key for run in self.runs.values() for node in (run.interpolation, run.wise) if node]
        keys += [node.key for node in (self.pretrained_source, *self.pretrained_target.values()) if node]
        key = key_of("report", _report_settings(self.cfg), keys)
        return Node(key, f"{inside(self.results, 'provenance')}/report-{key}.json")

    def reported_config(self) -> str | None:
        """The config file the study's current report was made from (its provenance); None before any report."""
        for record in sorted(Path(self.results, "provenance").glob("report-*.json")):
            try:
                return json.loads(record.read_text())["config"]["path"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return None

    def name_clash(self, config_path) -> str | None:
        """What running `config_path` would overwrite when results/<name>/ holds another config's report; else None."""
        other = self.reported_config()
        if other is None or _same_file(other, str(config_path)) or os.path.exists(self.report.path):
            return None  # no report yet, this config's own, or already the same as this config's (nothing to rewrite)
        return (f"{self.results}/ holds the report of {other}, and {config_path} has the same study name "
                f"{self.name!r}: running it rewrites that study's tables, index and plots (its runs stay). "
                f"Give {config_path} its own `name:` to keep both")

    def report_files(self) -> list:
        names = ["table.md", "table.csv", "table.tex", "table.html", "per_seed.csv", "index.csv", "tradeoff.png",
                 "tradeoff.pdf", "cost.png", "cost.pdf", "runtimes.csv", "runtimes.html"]
        return [f"{self.results}/{name}" for name in names] + self.curve_files() + self.interpolation_files()

    def interpolation_files(self) -> list:
        names = ("interpolation.csv", "interpolation.png", "interpolation.pdf")
        return [f"{self.results}/{name}" for name in names] if self.interpolates else []

    def curve_files(self) -> list:
        names = ("curve.csv", "curve.png", "curve.pdf")
        return [f"{self.results}/{name}" for name in names] if self.cfg["curve"]["steps"] else []

    def grid_keys(self) -> set:
        """The key of every job the grid plans (its report's excepted): what its runtimes table may list."""
        nodes = [self.synthetic, self.backbone, *self.targets.values(), self.source, self.features, self.curve_data,
                 self.pretrained_source, *self.pretrained_target.values()]
        nodes += [node for run in self.runs.values()
                  for node in (run.train, run.target, run.source, run.curve, run.interpolation, run.wise)]
        return {node.key for node in nodes if node is not None}


def _report_settings(cfg: dict) -> dict:
    """The config as the report reads it: without places (folders), scheduler resources, kernel settings and the
    task sequence (whose own report reads it)."""
    places = ("data_dir", "cache_dir", "resume_dir", "resources", "reproducibility", "sequence")
    settings = {key: value for key, value in cfg.items() if key not in places}
    if not cfg["interpolation"]["enabled"]:  # off: the report is the one made before the section existed
        settings.pop("interpolation")
    settings["source"] = {key: value for key, value in cfg["source"].items() if key != "imagenet_dir"}
    settings["target"] = {key: value for key, value in cfg["target"].items() if key != "mirrors"}  # servers: places
    return settings


def _same_file(recorded: str, given: str) -> bool:
    """Whether two config paths name one file; a recorded absolute path (another machine's clone) matches by its
    end, so a teammate's pulled results do not read as another study."""
    if os.path.abspath(recorded) == os.path.abspath(given):
        return True
    return os.path.isabs(recorded) and not os.path.isabs(given) and recorded.endswith(os.sep + os.path.normpath(given))


def _checkpoint_name(name: str) -> str:
    """Keep a known checkpoint suffix (read_state_dict picks the format by it)."""
    return name if name.endswith((".pth", ".pt", ".safetensors", ".npz")) else f"{name}.pth"


def by_name(experiments: list) -> list:
    """Experiments in the order their names sort: the order in which they claim a shared training's folder."""
    return sorted(experiments, key=lambda exp: exp["name"])


def target_facts(target_cfg: dict, name: str) -> dict:
    """What the plan needs of a target dataset, without importing torch: kind, classes, splits, stored size."""
    from vitpeft.data import catalogue

    folder = target_cfg["imagefolders"].get(name)
    if folder is not None:
        root = Path(folder["root"])
        val = (root / "val").is_dir() and (root / "test").is_dir()  # with no test/, val/ is the scored split
        return {"kind": "imagefolder", "num_classes": folder["num_classes"], "val": val, "size": target_cfg["size"],
                "md5": {}, "root": folder["root"], "mirror": None}
    registered = catalogue.get(name)
    mirror = target_cfg["mirrors"].get(name)
    return {
        "kind": name,
        "num_classes": registered.classes,
        "val": "val" in registered.splits,
        "size": registered.native or target_cfg["size"],  # what prepare-target accepts for a fixed-size dataset
        "md5": dict(mirror["md5"]) if mirror else {},
        "root": None,
        "mirror": mirror["url"] if mirror else None,
    }
