"""Task sequences as keyed jobs: one training per (experiment, seed, step), chained by keys.

The config's `sequence` section names tasks T1 .. Tn (task-incremental: each
task has its own classifier head). Every listed experiment trains on T1 from
the pretrained backbone, then on T2 from the result, and so on. What carries
over from step i-1 to step i:

- shared (full, topk, lora, block expansion, ...): every trained weight but
  the head; step i's spec names step i-1's run under `start` (with that run's
  spec hash, checked before training), and gets a fresh head for task i.
- per task (lora, lora_qkv, peft, block expansion, vpt_shallow, vpt_deep,
  adaptformer, ssf: every method with a routed view, listed in
  sequence.per_task): a new adapter, prompts or new blocks, from the pretrained
  backbone; the earlier tasks' adapters and heads stay in their own runs,
  untouched, so task j's model after step i is exactly the one after step j.
- linear: nothing to carry (the backbone never trains); each task its own head.

Each step trains with its experiment's settings on its task
(vitpeft.study.config.task_train: `sequence.train` and `sequence.budget`).

A step's key hashes its spec, its task's data, the backbone and the key of
the run it starts from: editing task i gives new keys to step i and every
step that starts from it, and to nothing else. A step that trains what the
grid or another chain already plans (a first step is the grid's run of the
same experiment on the same task; a per-task step is a run from the
pretrained backbone) is that training, read from its folder
(vitpeft.study.keys.Outputs). After each step one job scores every task seen
so far and the source domain (a row of the accuracy matrix); per-task
experiments also get a router job (no task id); one report job reads them all.

Pure Python, like vitpeft.study.plan, which builds this on top of the grid
and passes itself in (this module never imports it: planning has one direction).
"""

from dataclasses import dataclass, field

from vitpeft.data import synthetic
from vitpeft.errors import VitpeftError
from vitpeft.methods.arguments import HEAD_ONLY
from vitpeft.study import spec as spec_lib
from vitpeft.study.config import task_train
from vitpeft.study.keys import Node, key_of, recipe, without_paths
from vitpeft.study.paths import inside

SHARED, PER_TASK = "shared", "per_task"
SOURCE = "source"  # the matrix's column 0


@dataclass(frozen=True)
class Step:
    """Step `index` (1-based) of one experiment's chain: training on `task`, and the matrix row it scores.

    `train` is the run this step reads, which another part of the study may have planned (the grid's run,
    another chain's step); `spec` is the spec that trains it.
    """

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


class Sequence:
    """Every job of a study's task sequence, keyed; built by vitpeft.study.plan.Plan, which it is given."""

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
        # Planned in name order (who owns a shared step's folder), kept in the config's order.
        planned = {(exp["name"], seed): self._chain(exp, seed)
                   for exp in sorted(experiments, key=lambda exp: exp["name"]) for seed in cfg["seeds"]}
        self.chains = {(exp["name"], seed): planned[(exp["name"], seed)] for exp in experiments for seed in cfg["seeds"]}
        route = section["router"] and plan.features is not None
        self.routers = {chain: self._router(steps) for chain, steps in self.chains.items()
                        if route and steps[0].variant == PER_TASK}
        self.report = self._report()

    # ---------------------------------------------------------------- data

    def _target(self, name: str) -> Node:
        if name in synthetic.TASK_DOMAINS:
            key = key_of("synthetic_task", name, self.plan.cfg["synthetic"])
            path = inside(self.plan.data, "synthetic-tasks", name, key)
            return Node(key, path, (), {"kind": "synthetic_task", "num_classes": synthetic.TASK_CLASSES, "val": False})
        return self.plan.dataset(name)

    def task_node(self, name: str) -> Node | None:
        """A sequence task's data node (None when it is not one)."""
        return self.targets.get(name)

    # ---------------------------------------------------------------- steps

    def _chain(self, exp: dict, seed: int) -> list:
        variant = PER_TASK if exp["name"] in self.per_task else SHARED
        carries = variant == SHARED and exp["method"] not in HEAD_ONLY
        steps, previous = [], None
        folder = inside(self.folder, "runs", exp["name"])
        metrics = inside(self.folder, "metrics", exp["name"])
        for index, task in enumerate(self.tasks, start=1):
            data = self.targets[task]
            start = previous.train if carries and previous is not None else None
            trained = self._training(exp, seed, index, data, start, f"{folder}/seed{seed}")
            runs = [s.train for s in steps] + [trained]
            scored = [self.targets[t] for t in self.tasks[:index]]
            features = self.plan.features
            knn = self.plan.knn if features is not None else None
            metrics_key = key_of("sequence_eval", [n.key for n in runs], [n.key for n in scored],
                                 features.key if features else None, knn)
            node = self.plan.outputs.node(
                Node(metrics_key, f"{metrics}/seed{seed}/step{index}-{metrics_key}.json", tuple(runs)))
            previous = Step(exp["name"], seed, index, task, exp["method"], variant,
                            trained.info["spec"], trained, node)
            steps.append(previous)
        return steps

    def _training(self, exp: dict, seed: int, index: int, data: Node, start: Node | None, folder: str) -> Node:
        """The run step `index` trains: its own node, or the one the grid or another chain planned alike."""
        task = self.tasks[index - 1]
        where = f"sequence {exp['name']}/seed{seed}/step{index} ({task})"
        train = {**task_train(self.plan.cfg, exp, index - 1, where), "seed": seed, "curve_steps": []}
        if self.plan.holds_out(data, train):  # as the grid's run on that dataset, which this step may then be
            train["hold_out"] = True
        spec = self.plan.spec(data, f"{exp['name']}.step{index}", exp["method"], exp["args"], train, where)
        if start is not None:
            begun = spec_lib.resolve(start.info["spec"], where=f"the run {where} starts from")
            spec["start"] = {"run": start.path, "spec_hash": spec_lib.spec_hash(begun)}
        without = without_paths({key: value for key, value in spec.items() if key != "start"})
        backbone = self.plan.backbone
        key = key_of("sequence_step", without, data.key, backbone.key, start.key if start is not None else None)
        needs = (data, backbone) + ((start,) if start is not None else ())
        node = Node(key, f"{folder}/step{index}-{key}", needs, {"spec": spec})
        return self.plan.outputs.training(recipe(spec, data, backbone, start), node)

    def _router(self, steps: list) -> Node:
        last = steps[-1]
        key = key_of("sequence_route", [s.train.key for s in steps], [self.targets[t].key for t in self.tasks],
                     self.plan.features.key, self.plan.knn)
        path = f"{inside(self.folder, 'metrics', last.experiment)}/seed{last.seed}/router-{key}.json"
        return self.plan.outputs.node(Node(key, path, tuple(s.train for s in steps)))

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

    def trainings(self) -> list:
        """Every run a chain reads, each once (a run shared with the grid or another chain included)."""
        return list({step.train.key: step.train for steps in self.chains.values() for step in steps}.values())

    def files(self) -> list:
        """What the sequence report writes (besides its keyed provenance record)."""
        names = ["matrix.csv", "summary.csv", "summary.md", "summary.html", "runtimes.csv", "runtimes.html"]
        names += [f"heatmap-{experiment}.{suffix}" for experiment in self.experiments() for suffix in ("png", "pdf")]
        return [f"{self.folder}/{name}" for name in names]

    def experiments(self) -> list:
        """The experiments that run the sequence, in config order."""
        return list(dict.fromkeys(experiment for experiment, _ in self.chains))

    def keys(self) -> set:
        """The key of every job the sequence plans (its report's excepted): what its runtimes table may list."""
        nodes = [node for chain in self.chains.values() for step in chain for node in (step.train, step.metrics)]
        nodes += [*self.routers.values(), *self.targets.values()]
        return {node.key for node in nodes}
