"""Task sequences as keyed jobs: one training job per (experiment, seed, step), chained by keys.

The config's `sequence` section names tasks T1 .. Tn (task-incremental: each
task has its own classifier head). Every listed experiment trains on T1 from
the pretrained backbone, then on T2 from the result, and so on. What carries
over from step i-1 to step i:

- shared (full, topk, lora, block expansion, ...): every trained weight but
  the head; step i's spec names step i-1's run under `start` (with that run's
  spec hash, checked before training), and gets a fresh head for task i.
- per task (lora, lora_qkv, peft, block expansion, listed in
  sequence.per_task): a new adapter or new blocks, from the pretrained
  backbone; the earlier tasks' adapters and heads stay in their own runs,
  untouched, so task j's model after step i is exactly the one after step j.
- linear: nothing to carry (the backbone never trains); each task its own head.

Step i's key hashes its spec, its task's data, the backbone and step i-1's
key: editing task i gives new keys to step i and everything after it, and to
nothing before it. After each step one job scores every task seen so far and
the source domain (a row of the accuracy matrix); per-task experiments also
get a router job (no task id); one report job reads them all.

Pure Python, like vitpeft.study.plan (the Snakefile builds this while parsing).
"""

from dataclasses import dataclass, field

from vitpeft.data import synthetic
from vitpeft.errors import VitpeftError
from vitpeft.study import plan as plan_lib
from vitpeft.study import spec as spec_lib
from vitpeft.study.config import merged_train
from vitpeft.study.paths import inside
from vitpeft.study.plan import Node, key_of

PER_TASK_METHODS = ("lora", "lora_qkv", "peft", "block_expansion")  # methods with an adapter or new blocks to swap
SHARED, PER_TASK = "shared", "per_task"
SOURCE = "source"  # the matrix's column 0


@dataclass(frozen=True)
class Step:
    """Step `index` (1-based) of one experiment's chain: training on `task`, and the matrix row it scores."""

    experiment: str
    seed: int
    index: int
    task: str
    method: str
    variant: str
    spec: dict = field(compare=False)
    train: Node = field(compare=False)
    metrics: Node = field(compare=False)

    @property
    def label(self) -> str:
        return f"sequence {self.experiment}/seed{self.seed}/step{self.index} ({self.task})"


def check(cfg: dict, where: str) -> None:
    """What the schema cannot say of `sequence`: tasks known and distinct, experiments known, variants possible."""
    section = cfg.get("sequence")
    if section is None:
        return
    tasks = section["tasks"]
    if len(tasks) < 2:
        raise VitpeftError(f"{where}: sequence.tasks: a sequence needs at least two tasks, got {len(tasks)} "
                           f"({', '.join(tasks) or 'none'}); for one task use target.datasets")
    first = {}
    known = known_datasets(cfg)
    for i, name in enumerate(tasks):
        if name in first:
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: {name!r} twice (also sequence.tasks[{first[name]}]); "
                               "each task appears once")
        first[name] = i
        if name not in known:
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: unknown dataset {name!r} (known: {', '.join(known)}; "
                               "or define it under target.imagefolders)")
        if name == "synthetic" and "synthetic" not in (*cfg["target"]["datasets"], cfg["source"]["dataset"]):
            raise VitpeftError(f"{where}: sequence.tasks[{i}]: synthetic is the synthetic domains' target: it needs "
                               "target.datasets or source.dataset synthetic (which make those domains)")
    methods = {exp["name"]: exp["method"] for exp in cfg["experiments"]}
    chosen = section["experiments"] if section["experiments"] is not None else list(methods)
    for i, name in enumerate(section["experiments"] or []):
        if name not in methods:
            raise VitpeftError(f"{where}: sequence.experiments[{i}]: no experiment named {name!r}")
    for i, name in enumerate(section["per_task"]):
        if name not in chosen:
            raise VitpeftError(f"{where}: sequence.per_task[{i}]: {name!r} is not an experiment that runs the "
                               "sequence (sequence.experiments)")
        if methods[name] not in PER_TASK_METHODS:
            raise VitpeftError(f"{where}: sequence.per_task[{i}]: experiment {name!r} (method {methods[name]}) has no "
                               f"per-task variant: only {', '.join(PER_TASK_METHODS)} add an adapter or blocks per task")
    if not chosen:
        raise VitpeftError(f"{where}: sequence.experiments: no experiment runs the sequence")


def known_datasets(cfg: dict) -> list:
    from vitpeft.data import catalogue

    built_in = [name for name in catalogue.REGISTRY if name != "imagefolder"]
    return [*built_in, "synthetic", *synthetic.TASK_DOMAINS, *cfg["target"]["imagefolders"]]


class Sequence:
    """Every job of a study's task sequence, keyed; built by Plan when the config has a `sequence`."""

    def __init__(self, plan):
        cfg = plan.cfg
        section = cfg["sequence"]
        self.plan = plan
        self.tasks = list(section["tasks"])
        self.per_task = set(section["per_task"])
        self.folder = inside(plan.results, "sequence")
        self.targets = {name: self._target(name) for name in self.tasks}
        names = section["experiments"]
        experiments = [exp for exp in cfg["experiments"] if names is None or exp["name"] in names]
        self.chains = {(exp["name"], seed): self._chain(exp, seed) for exp in experiments for seed in cfg["seeds"]}
        route = section["router"] and plan.features is not None
        self.routers = {chain: self._router(steps) for chain, steps in self.chains.items()
                        if route and steps[0].variant == PER_TASK}
        self.report = self._report()

    # ---------------------------------------------------------------- data

    def _target(self, name: str) -> Node:
        if name in self.plan.targets:
            return self.plan.targets[name]
        if name in synthetic.TASK_DOMAINS:
            key = key_of("synthetic_task", name, self.plan.cfg["synthetic"])
            path = inside(self.plan.data, "synthetic-tasks", name, key)
            return Node(key, path, (), {"kind": "synthetic_task", "num_classes": synthetic.TASK_CLASSES, "val": False})
        return self.plan._target(name)

    def task_node(self, name: str) -> Node | None:
        """A sequence task's data node (None when it is not one)."""
        return self.targets.get(name)

    # ---------------------------------------------------------------- steps

    def _chain(self, exp: dict, seed: int) -> list:
        variant = PER_TASK if exp["name"] in self.per_task else SHARED
        carries = variant == SHARED and exp["method"] not in plan_lib.UNTOUCHED
        train = {**merged_train(self.plan.cfg, exp), "seed": seed, "curve_steps": []}
        steps, previous = [], None
        folder = inside(self.folder, "runs", exp["name"])
        metrics = inside(self.folder, "metrics", exp["name"])
        for index, task in enumerate(self.tasks, start=1):
            data = self.targets[task]
            spec = self.plan._spec(task, f"{exp['name']}.step{index}", exp["method"], exp["args"], train, seed,
                                   target=data)
            if carries and previous is not None:
                resolved = spec_lib.resolve(previous.spec, where=previous.label)
                spec["start"] = {"run": previous.train.path, "spec_hash": spec_lib.spec_hash(resolved)}
            without = plan_lib._without_paths({k: v for k, v in spec.items() if k != "start"})
            key = key_of("sequence_step", without, variant, data.key, self.plan.backbone.key,
                         previous.train.key if previous else None)
            needs = (data, self.plan.backbone) + ((previous.train,) if previous else ())
            trained = Node(key, f"{folder}/seed{seed}/step{index}-{key}", needs, {"spec": spec})
            runs = [s.train for s in steps] + [trained]
            scored = [self.targets[t] for t in self.tasks[:index]]
            knn = self.plan.knn if self.plan.features is not None else None
            metrics_key = key_of("sequence_eval", [n.key for n in runs], [n.key for n in scored],
                                 self.plan.features.key if self.plan.features else None, knn)
            node = Node(metrics_key, f"{metrics}/seed{seed}/step{index}-{metrics_key}.json", tuple(runs))
            previous = Step(exp["name"], seed, index, task, exp["method"], variant, spec, trained, node)
            steps.append(previous)
        return steps

    def _router(self, steps: list) -> Node:
        last = steps[-1]
        key = key_of("sequence_route", [s.train.key for s in steps], [self.targets[t].key for t in self.tasks],
                     self.plan.features.key, self.plan.knn)
        path = f"{inside(self.folder, 'metrics', last.experiment)}/seed{last.seed}/router-{key}.json"
        return Node(key, path, tuple(s.train for s in steps))

    def _report(self) -> Node:
        keys = [s.metrics.key for steps in self.chains.values() for s in steps]
        keys += [node.key for node in self.routers.values()]
        source = self.plan.pretrained_source.key if self.plan.pretrained_source else None
        key = key_of("sequence_report", self.tasks, keys, source)
        return Node(key, f"{self.folder}/provenance/sequence-{key}.json")

    # ---------------------------------------------------------------- lookups for jobs

    def step(self, experiment: str, seed, index, key: str | None = None) -> Step:
        """The planned step a job names; a key that is not the planned one means the config changed."""
        chain = self.chains.get((experiment, int(seed)))
        if chain is None:
            raise VitpeftError(f"no sequence of experiment {experiment!r} with seed {seed} in study {self.plan.name!r} "
                               f"(sequence.experiments, seeds)")
        if not 1 <= int(index) <= len(chain):
            raise VitpeftError(f"sequence step {index}: the sequence has steps 1..{len(chain)}")
        found = chain[int(index) - 1]
        if key is not None and key not in (found.train.key, found.metrics.key):
            raise VitpeftError(f"{found.label}: the config changed since this job was planned (key {key}, now "
                               f"{found.train.key}); rerun snakemake to plan again")
        return found

    def chain(self, experiment: str, seed) -> list:
        return self.chains[(experiment, int(seed))]

    def files(self) -> list:
        """What the sequence report writes (besides its keyed provenance record)."""
        names = ["matrix.csv", "summary.csv", "summary.md"]
        names += [f"heatmap-{experiment}.png" for experiment in dict.fromkeys(e for e, _ in self.chains)]
        return [f"{self.folder}/{name}" for name in names]
