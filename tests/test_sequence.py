"""Task sequences: planning and refusals, chained keys, the measures, the matrix of a real tiny run, the router.

The tiny study (`study` fixture) trains a two-task sequence (the synthetic colour pairs, then grating
orientation) in this process, with the real training loop, on a 4-block ViT: full fine-tuning (shared: the
backbone carries over) and LoRA twice (shared, and per task), plus the single-task run of task 1.
"""

import copy
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitpeft import digests
from vitpeft.data import synthetic
from vitpeft.errors import VitpeftError
from vitpeft.evaluation import evaluate, features
from vitpeft.evaluation import sequence as seq_eval
from vitpeft.models.backbone import build_model
from vitpeft.report import sequence as report
from vitpeft.study import config as config_lib
from vitpeft.study import keys as keys_lib
from vitpeft.study import spec as spec_lib
from vitpeft.study.plan import Plan
from vitpeft.training import model as models
from vitpeft.training.train import train

REPO = Path(__file__).resolve().parents[1]
MODEL = {"name": "vit_base_patch16_224", "img_size": 32,
         "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2}}


def base_config(root, tasks=("synthetic", "synthetic_orientation")) -> dict:
    return {
        "name": "seqtest",
        "data_dir": str(root / "data"),
        "cache_dir": str(root / "cache"),
        "resume_dir": str(root / "resume"),
        "seeds": [0],
        "backbone": {"model": copy.deepcopy(MODEL), "checkpoint": str(root / "backbone.safetensors"), "url": None},
        "synthetic": {"train_per_class": 16, "test_per_class": 8},
        "target": {"datasets": ["synthetic"]},
        "source": {"dataset": "synthetic", "k": [5], "mean": [0.5] * 3, "std": [0.5] * 3},
        "train": {"steps": 12, "batch_size": 16, "lr": 0.05, "warmup_steps": 2, "selection": "last",
                  "checkpoint_every": 6, "log_every": 6, "precision": "fp32"},
        "sequence": {"tasks": list(tasks), "per_task": ["lora_pt"]},
        "experiments": [
            {"name": "full", "method": "full"},
            {"name": "lora", "method": "lora", "args": {"r": 4}},
            {"name": "lora_pt", "method": "lora", "args": {"r": 4}},
        ],
    }


# ---------------------------------------------------------------- refusals, while planning


@pytest.mark.parametrize("change, key, words", [
    (lambda s: s.update(tasks=["synthetic"]), "sequence.tasks", "at least two tasks"),
    (lambda s: s.update(tasks=["synthetic", "dtd", "synthetic"]), "sequence.tasks[2]", "twice"),
    (lambda s: s.update(tasks=["synthetic", "imagenet21k"]), "sequence.tasks[1]", "unknown dataset"),
    (lambda s: s.update(per_task=["full"]), "sequence.per_task[0]", "no per-task variant"),
    (lambda s: s.update(experiments=["nope"]), "sequence.experiments[0]", "no experiment named"),
])
def test_bad_sequences_are_refused_naming_the_key(tmp_path, change, key, words):
    cfg = base_config(tmp_path)
    change(cfg["sequence"])
    with pytest.raises(VitpeftError) as error:
        config_lib.load(cfg)
    assert f"{key}:" in str(error.value) and words in str(error.value)


# ---------------------------------------------------------------- each task's training settings


def step_settings(cfg, exp="full") -> list:
    """(steps, batch_size, lr, warmup_steps) of each step of `exp`'s chain (seed 0)."""
    chain = Plan(config_lib.load(cfg)).sequence.chain(exp, 0)
    return [tuple(step.spec["train"][key] for key in ("steps", "batch_size", "lr", "warmup_steps")) for step in chain]


def test_each_task_trains_as_many_epochs_as_the_first_by_default(tmp_path):
    """synthetic has 16 x 10 = 160 training images and dtd 1,880: 12 steps of 16 are 1.2 epochs of the first task,
    1.2 x 1,880 / 16 = 141 steps of dtd, whose warm-up keeps the experiment's share (2 of 12: 23.5, rounded to 24)."""
    cfg = base_config(tmp_path, ("synthetic", "dtd"))
    assert step_settings(cfg) == [(12, 16, 0.05, 2), (141, 16, 0.05, 24)]
    cfg["sequence"]["budget"] = "steps"
    assert step_settings(cfg) == [(12, 16, 0.05, 2), (12, 16, 0.05, 2)]


def test_a_tasks_own_settings_go_over_the_experiments_and_into_its_steps_keys_only(tmp_path):
    cfg = base_config(tmp_path, ("synthetic", "dtd", "synthetic_orientation"))
    cfg["sequence"]["train"] = {"dtd": {"steps": 30, "lr": 0.01}}
    # dtd: its steps and lr, the warm-up's share (2 x 30 / 12 = 5); synthetic_orientation: 1.2 epochs of 160 images
    assert step_settings(cfg) == [(12, 16, 0.05, 2), (30, 16, 0.01, 5), (12, 16, 0.05, 2)]
    cfg["sequence"]["train"] = {"dtd": {"batch_size": 40, "warmup_steps": 0}}
    assert step_settings(cfg)[1] == (56, 40, 0.05, 0)  # 1.2 x 1,880 / 40 = 56.4 steps at batch 40
    before = keys(base_config(tmp_path, ("synthetic", "dtd", "synthetic_orientation")))
    edited = base_config(tmp_path, ("synthetic", "dtd", "synthetic_orientation"))
    edited["sequence"]["train"] = {"dtd": {"lr": 0.01}}
    after = keys(edited)
    for (exp, seed, index), (train_key, _) in before.items():
        follows = index == 2 or (index == 3 and exp != "lora_pt")  # step 3 of a shared chain starts from step 2
        assert (after[(exp, seed, index)][0] != train_key) == follows, (exp, index)
    unchanged = copy.deepcopy(edited)
    del unchanged["sequence"]
    assert {k: r.train.key for k, r in Plan(config_lib.load(unchanged)).runs.items()} == {
        k: r.train.key for k, r in Plan(config_lib.load(edited)).runs.items()}  # the grid's runs keep their keys


@pytest.mark.parametrize("change, words", [
    (lambda c: c["sequence"].update(train={"flowers102": {"lr": 0.1}}),
     "sequence.train.flowers102: not one of sequence.tasks (synthetic, dtd)"),
    (lambda c: c["sequence"].update(train={"dtd": {"lr": -1}}), "sequence.train.dtd.lr: -1 is less than or equal"),
    (lambda c: c["sequence"].update(train={"dtd": {"stepz": 5}}), "sequence.train.dtd.stepz: unknown key"),
    (lambda c: c["sequence"].update(train={"dtd": {"seed": 5}}), "sequence.train.dtd.seed: unknown key"),
    (lambda c: (c["sequence"].update(tasks=["dtd", "synthetic"]),
                c["experiments"].append({"name": "lp", "method": "lpft", "args": {"probe_steps": 6}})),
     "experiment 'lp' on sequence task 'synthetic': method 'lpft': probe_steps=6 must be below the run's "
     "train.steps (1)"),
    (lambda c: (c["target"].update(imagefolders={"mine": {"root": "/nowhere", "num_classes": 3}}),
                c["sequence"].update(tasks=["synthetic", "mine"])),
     "imagefolder 'mine' does not say how many it has: set target.imagefolders.mine.train_images"),
])  # fmt: skip
def test_bad_per_task_settings_are_refused_naming_the_key(tmp_path, change, words):
    cfg = base_config(tmp_path, ("synthetic", "dtd"))
    change(cfg)
    with pytest.raises(VitpeftError) as error:
        config_lib.load(cfg)
    assert words in str(error.value)


def test_an_imagefolder_task_scales_by_the_images_it_declares(tmp_path):
    cfg = base_config(tmp_path, ("synthetic", "mine"))
    cfg["target"]["imagefolders"] = {"mine": {"root": str(tmp_path / "mine"), "num_classes": 3, "train_images": 400}}
    assert step_settings(cfg)[1][0] == 30  # 1.2 epochs x 400 images / 16
    cfg["sequence"]["budget"] = "steps"
    del cfg["target"]["imagefolders"]["mine"]["train_images"]
    assert step_settings(cfg)[1][0] == 12  # nothing to scale: no size needed
def test_per_task_variants_are_the_methods_with_a_routed_view(tmp_path):
    """A per-task variant swaps the method's additions; one that trains pretrained weights in place has none to swap."""
    cfg = base_config(tmp_path)
    added = [{"name": name, "method": name} for name in ("vpt_deep", "adaptformer", "ssf", "bitfit")]
    cfg["experiments"] += added
    cfg["sequence"]["per_task"] = ["vpt_deep", "adaptformer", "ssf"]
    chains = Plan(config_lib.load(cfg)).sequence.chains
    assert {name: chains[(name, 0)][0].variant for name in ("vpt_deep", "adaptformer", "ssf", "bitfit")} == {
        "vpt_deep": "per_task", "adaptformer": "per_task", "ssf": "per_task", "bitfit": "shared"}
    cfg["sequence"]["per_task"] = ["ssf", "bitfit"]
    with pytest.raises(VitpeftError) as error:
        config_lib.load(cfg)
    assert str(error.value) == (
        "config: sequence.per_task[1]: experiment 'bitfit' has no per-task variant: method 'bitfit' has no routed "
        "view: it trains pretrained weights in place, so no switch gives the pretrained function back (methods with "
        "one: lora, lora_qkv, peft, block_expansion, vpt_shallow, vpt_deep, adaptformer, ssf)")


# ---------------------------------------------------------------- keys: what an edit reruns


def keys(cfg) -> dict:
    seq = Plan(config_lib.load(cfg)).sequence
    return {(e, s, step.index): (step.train.key, step.metrics.key) for (e, s), chain in seq.chains.items()
            for step in chain}


def test_editing_a_task_gives_new_keys_to_its_step_and_to_what_depends_on_it_only(tmp_path):
    """A shared step starts from the one before it: editing task 1 retrains the chain. A per-task step starts
    from the pretrained backbone: editing task 1 retrains step 1 only, and rescores every row (each scores task 1)."""
    three = base_config(tmp_path, ("synthetic", "synthetic_orientation", "dtd"))
    before = keys(three)
    last = copy.deepcopy(three)
    last["sequence"]["tasks"][2] = "synthetic_hue"
    first = copy.deepcopy(three)
    first["sequence"]["tasks"][0] = "synthetic_hue"  # as many training images: the later steps' budgets stay
    changed_last, changed_first = keys(last), keys(first)
    for (exp, seed, index), (train_key, metrics_key) in before.items():
        assert (changed_last[(exp, seed, index)][0] == train_key) == (index < 3), (exp, index)
        assert (changed_last[(exp, seed, index)][1] == metrics_key) == (index < 3), (exp, index)
        retrained = exp != "lora_pt" or index == 1
        assert (changed_first[(exp, seed, index)][0] != train_key) == retrained, (exp, index)
        assert changed_first[(exp, seed, index)][1] != metrics_key, (exp, index)
    assert Plan(config_lib.load(last)).sequence.report.key != Plan(config_lib.load(three)).sequence.report.key


def test_a_first_step_is_the_grids_run_read_from_its_folder(tmp_path):
    """Step 1 trains what the grid trains on task 1 (its spec is the grid run's but the name): one node, one key,
    one folder; so do the shared and per-task variants' first steps, and two experiments equal but their names."""
    cfg = base_config(tmp_path)
    cfg["experiments"].append({"name": "lora_twin", "method": "lora", "args": {"r": 4}})
    plan = Plan(config_lib.load(cfg))
    grid = plan.runs[("synthetic", "lora", 0)].train
    assert grid.path.startswith(f"{plan.results}/runs/synthetic/lora/seed0-")
    for name in ("lora", "lora_pt", "lora_twin"):
        assert plan.sequence.chain(name, 0)[0].train is grid, name
    assert plan.runs[("synthetic", "lora_pt", 0)].train is grid  # the grid's own twins, too
    assert plan.runs[("synthetic", "lora_pt", 0)].target is plan.runs[("synthetic", "lora", 0)].target
    assert plan.sequence.chain("lora", 0)[1].spec["start"]["run"] == grid.path  # step 2 starts from that folder
    assert plan.sequence.chain("full", 0)[0].train is plan.runs[("synthetic", "full", 0)].train
    # Another lr: a training of its own. Another first task: the chains share a step of the sequence's own,
    # in the folder of the name that sorts first; a per-task step 2 on the grid's task is the grid's run again.
    other = copy.deepcopy(cfg)
    other["experiments"][3]["train"] = {"lr": 0.01}
    assert Plan(config_lib.load(other)).sequence.chain("lora_twin", 0)[0].train.path.startswith(
        f"{plan.results}/runs/synthetic/lora_twin/seed0-")
    swapped = copy.deepcopy(cfg)
    swapped["sequence"]["tasks"] = ["synthetic_orientation", "synthetic"]
    swapped = Plan(config_lib.load(swapped))
    first = swapped.sequence.chain("lora_twin", 0)[0].train
    assert first.path.startswith(f"{plan.results}/sequence/runs/lora/seed0/step1-")
    assert swapped.sequence.chain("lora_pt", 0)[0].train is first and swapped.sequence.chain("lora", 0)[0].train is first
    assert swapped.sequence.chain("lora_pt", 0)[1].train is swapped.runs[("synthetic", "lora", 0)].train
    assert swapped.sequence.chain("lora", 0)[1].train.path.startswith(f"{plan.results}/sequence/runs/lora/seed0/step2-")


def test_the_continual_plan_trains_each_distinct_training_once():
    """config/continual.yaml: 7 grid runs on CIFAR-100 and 7 chains of 3 steps are 28 trainings; the per-task
    variants' grid runs are lora_r8's and block_p3's, and every first step is a grid run: 5 + 7 x 2 = 19."""
    plan = Plan(config_lib.load(REPO / "config" / "continual.yaml"))
    planned = {run.train.key: run.train for run in plan.runs.values()}
    planned.update({node.key: node for node in plan.sequence.trainings()})
    assert len(plan.runs) + sum(len(chain) for chain in plan.sequence.chains.values()) == 28
    assert len(planned) == 19
    assert len({node.path for node in planned.values()}) == 19  # one folder each
    # Distinct by what they compute: the spec without its name (and curve steps), data, backbone, start.
    def computes(node):
        spec = {**node.info["spec"], "name": None, "start": node.info["spec"].get("start", {}).get("spec_hash")}
        return json.dumps([spec, [need.key for need in node.needs]], sort_keys=True, default=str)

    assert len({computes(node) for node in planned.values()}) == 19


def test_a_sequence_changes_no_key_of_the_grid(tmp_path):
    cfg = base_config(tmp_path)
    without = copy.deepcopy(cfg)
    del without["sequence"]
    with_plan, without_plan = Plan(config_lib.load(cfg)), Plan(config_lib.load(without))
    assert without_plan.sequence is None
    assert {k: r.train.key for k, r in with_plan.runs.items()} == {k: r.train.key for k, r in without_plan.runs.items()}
    assert with_plan.report.key == without_plan.report.key


# ---------------------------------------------------------------- the measures, against a hand-made matrix


HAND = [[90.0], [60.0, 80.0], [70.0, 50.0, 95.0]]  # R[i][j]: after step i+1, on task j+1


def test_measures_of_a_hand_made_matrix():
    assert report.average_accuracy(HAND) == pytest.approx((70 + 50 + 95) / 3)
    assert report.backward_transfer(HAND) == pytest.approx(((70 - 90) + (50 - 80)) / 2)  # -25
    # Chaudhry: task 1's best before the end is 90 (step 1), task 2's is 80: ((90-70) + (80-50)) / 2
    assert report.forgetting_chaudhry(HAND) == pytest.approx(25.0)
    assert report.forgetting_avalanche(HAND) == pytest.approx(25.0)
    rebound = [[60.0], [90.0, 80.0], [70.0, 80.0, 95.0]]  # task 1 improved at step 2, then fell
    assert report.forgetting_chaudhry(rebound) == pytest.approx(((90 - 70) + (80 - 80)) / 2)  # 10: max is step 2
    assert report.forgetting_avalanche(rebound) == pytest.approx(((60 - 70) + 0) / 2)  # -5: right after training
    assert report.backward_transfer(rebound) == pytest.approx(5.0)
    with pytest.raises(VitpeftError):
        report.average_accuracy([[50.0]])


# ---------------------------------------------------------------- a real two-task run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("sequence")
    torch.manual_seed(0)
    save_file(build_model(MODEL, 10).state_dict(), str(root / "backbone.safetensors"))
    cfg = base_config(root)
    added = [{"name": "vpt_pt", "method": "vpt_deep", "args": {"length": 2}},
             {"name": "adapt_pt", "method": "adaptformer", "args": {"bottleneck": 4}}]  # the new per-task variants
    cfg["experiments"] += added
    cfg["sequence"]["per_task"] += [exp["name"] for exp in added]
    plan = Plan(config_lib.load(cfg))
    synthetic.write_domains(synthetic.make_domains(plan.cfg["synthetic"]), plan.synthetic.path)
    task = plan.sequence.targets["synthetic_orientation"]
    synthetic.write_task(synthetic.make_task("synthetic_orientation", plan.cfg["synthetic"]), task.path, "x")
    resume = root / "resume"
    grid = {run.train.key: run.train for run in plan.runs.values()}
    for node in [*grid.values(), *plan.sequence.trainings()]:  # each training once; a chain's in its order
        if not Path(node.path).exists():
            train(spec_lib.resolve(node.info["spec"]), node.path, resume, device="cpu")
    return plan, root


def accuracy(model, folder, spec) -> float:
    """Top-1 by hand: every test image through the model, argmax against the label."""
    data = features.load_prepared(folder, "test")
    x = torch.from_numpy(np.array(data.images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec["data"]["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["data"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model.eval()(x).argmax(dim=1)
    return 100.0 * (predicted == torch.as_tensor(np.asarray(data.labels))).double().mean().item()


def test_the_matrix_of_a_two_task_run_entry_by_entry(study):
    plan, _ = study
    seq = plan.sequence
    chain = seq.chain("full", 0)
    one, two = (spec_lib.resolve(s.spec) for s in chain)
    tests = [f"{seq.targets[t].path}/test" for t in seq.tasks]
    # By hand: the pretrained backbone with step 2's trained weights, then task 1's head from step 1's file.
    from safetensors.torch import load_file

    after_two = models.pretrained(two)
    after_two.load_state_dict({**after_two.state_dict(), **load_file(f"{chain[1].train.path}/trainable.safetensors")})
    hand = {(2, 2): accuracy(after_two, tests[1], two)}
    step_one = load_file(f"{chain[0].train.path}/trainable.safetensors")
    after_two.reset_classifier(10)
    after_two.head.load_state_dict({"weight": step_one["head.weight"], "bias": step_one["head.bias"]})
    hand[(2, 1)] = accuracy(after_two, tests[0], one)
    after_one = models.pretrained(one)
    after_one.load_state_dict({**after_one.state_dict(), **step_one})
    hand[(1, 1)] = accuracy(after_one, tests[0], one)

    rows = {i: seq_eval.score_step(plan, "full", 0, i, "cpu") for i in (1, 2)}
    assert rows[1]["tasks"] == {"synthetic": hand[(1, 1)]}
    assert rows[2]["tasks"] == {"synthetic": hand[(2, 1)], "synthetic_orientation": hand[(2, 2)]}
    # The source column: the shared backbone's k-NN after each step, as eval-source computes it.
    bank, queries = plan.source.info["bank"], plan.source.info["queries"]
    for i, spec in ((1, one), (2, two)):
        expected = evaluate.eval_source(spec, chain[i - 1].train.path, bank, queries, ks=[5], mean=[0.5] * 3,
                                        std=[0.5] * 3)["top1"]
        assert rows[i]["source"]["top1"] == expected
    # Full fine-tuning on task 2 moved the weights task 1 is scored with: the two rows differ there.
    assert load_file(f"{chain[1].train.path}/trainable.safetensors")["blocks.0.attn.qkv.weight"].ne(
        step_one["blocks.0.attn.qkv.weight"]).any()


def outputs(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def test_per_task_variant_restores_the_earlier_task_exactly_and_shared_does_not(study):
    plan, _ = study
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    per_task, shared = plan.sequence.chain("lora_pt", 0), plan.sequence.chain("lora", 0)
    right_after = outputs(seq_eval.task_model(per_task, 1, 1), images)
    later = outputs(seq_eval.task_model(per_task, 2, 1), images)
    assert (later - right_after).abs().max().item() == 0.0
    moved = outputs(seq_eval.task_model(shared, 2, 1), images) - outputs(seq_eval.task_model(shared, 1, 1), images)
    assert moved.abs().max().item() > 0.0  # the shared adapter kept training on task 2: task 1's outputs moved
    # Step 2 of the shared variant started from step 1's adapter, not from zero: its spec says so.
    assert per_task[1].spec.get("start") is None and shared[1].spec["start"]["run"] == shared[0].train.path


@pytest.mark.parametrize("experiment", ["vpt_pt", "adapt_pt"])
def test_visual_peft_per_task_variants_restore_the_earlier_task_exactly(study, experiment):
    plan, _ = study
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    chain = plan.sequence.chain(experiment, 0)
    right_after = outputs(seq_eval.task_model(chain, 1, 1), images)
    assert (outputs(seq_eval.task_model(chain, 2, 1), images) - right_after).abs().max().item() == 0.0
    assert chain[1].variant == "per_task" and chain[1].spec.get("start") is None  # step 2: from the pretrained one


def test_what_a_shared_training_leaves_out_of_its_recipe_never_changes_its_bits(study, tmp_path):
    """A first step reads the grid's run because the two differ only in what the recipe leaves out (the name,
    the curve snapshots kept along the way): trained under the step's own name, with curve steps, it is the
    same weights bit for bit, and its matrix row scores that run."""
    from safetensors.torch import load_file

    plan, _ = study
    single = plan.runs[("synthetic", "lora", 0)]
    step = plan.sequence.chain("lora", 0)[0]
    assert step.train is single.train
    alias = spec_lib.resolve({**single.spec, "name": "lora.step1"})
    alias["train"]["curve_steps"] = [0, 6]
    data, backbone = plan.targets["synthetic"], plan.backbone
    assert keys_lib.recipe(alias, data, backbone) == keys_lib.recipe(single.spec, data, backbone)
    out = train(alias, tmp_path / "alias", tmp_path / "resume", device="cpu")
    a, b = (load_file(f"{folder}/trainable.safetensors") for folder in (single.train.path, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got = seq_eval.score_step(plan, "lora", 0, 1, "cpu")
    test = features.load_prepared(f"{plan.targets['synthetic'].path}/test", "test")
    spec = spec_lib.resolve(single.spec)
    expected = evaluate.classifier_scores(models.trained(spec, single.train.path).eval(), test, spec, "cpu", 256)[0]
    assert got["tasks"]["synthetic"] == expected and got["run"] == single.train.path


def test_a_chain_without_its_previous_step_or_with_a_foreign_one_is_refused(study, tmp_path):
    plan, root = study
    step = plan.sequence.chain("full", 0)[1]
    spec = spec_lib.resolve(step.spec)
    missing = {**spec, "start": {**spec["start"], "run": str(tmp_path / "nowhere")}}
    with pytest.raises(VitpeftError, match="previous step's run .* is missing"):
        train(missing, tmp_path / "out1", tmp_path / "resume", device="cpu")
    foreign = {**spec, "start": {**spec["start"], "spec_hash": "0" * 16}}
    with pytest.raises(VitpeftError, match="belongs to another config"):
        train(foreign, tmp_path / "out2", tmp_path / "resume", device="cpu")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


# ---------------------------------------------------------------- the router


def test_router_on_separable_domains_routes_right():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=generator), dim=1)  # one direction per domain

    classes = [torch.nn.functional.normalize(c + 0.3 * torch.randn(5, 16, generator=generator), dim=1)
               for c in centres]  # 5 classes per domain, spread around the domain's direction

    def domain(d, n):
        labels = torch.arange(n) % 5
        feats = classes[d][labels] + 0.05 * torch.randn(n, 16, generator=generator)
        return torch.nn.functional.normalize(feats, dim=1), labels

    prototypes = [seq_eval.class_prototypes(*domain(d, 100)) for d in range(3)]
    queries = [domain(d, 60)[0] for d in range(3)]
    routes = torch.cat([seq_eval.route(q, prototypes) for q in queries])
    truth = torch.arange(3).repeat_interleave(60)
    assert (routes == truth).double().mean().item() >= 0.95


def test_oracle_route_is_the_task_id_bound_and_the_router_never_above(study):
    plan, _ = study
    result = seq_eval.evaluate_router(plan, "lora_pt", 0, "cpu")
    for name, scores in result["domains"].items():
        assert scores["routed"] <= scores["task_id"], name
    # The same counts with the oracle's routes (the true domain) give the task-id figures exactly.
    routes = torch.tensor([0, 1, 1, 2, 2, 0])
    domains = torch.tensor([0, 1, 2, 2, 1, 0])
    right = torch.tensor([True, True, True, False, True, False])
    oracle = seq_eval.routed_scores(domains, domains, right, ["source", "a", "b"])
    real = seq_eval.routed_scores(routes, domains, right, ["source", "a", "b"])
    for name in ("source", "a", "b"):
        assert oracle["domains"][name]["routed"] == oracle["domains"][name]["task_id"]
        assert real["domains"][name]["routed"] <= real["domains"][name]["task_id"]
    assert real["domains"]["b"]["routed"] == 0.0 and real["domains"]["a"]["routed"] == 50.0  # counted by hand


def score_every_row(plan) -> None:
    """What the eval_step and route jobs write, for every chain of the study; the untouched backbone's source at 50."""
    from vitpeft.digests import write_json  # as vitpeft eval-step and route write them

    seq = plan.sequence
    for chain in seq.chains.values():
        for step in chain:
            write_json(step.metrics.path, seq_eval.score_step(plan, step.experiment, 0, step.index, "cpu"))
    for (exp, seed), node in seq.routers.items():
        write_json(node.path, seq_eval.evaluate_router(plan, exp, seed, "cpu"))
    write_json(plan.pretrained_source.path, {"top1": 50.0})


def test_report_writes_the_matrix_and_measures(study):
    plan, root = study
    seq = plan.sequence
    score_every_row(plan)
    written = report.write(plan, root / "record.json")
    assert "| full | shared |" in written["summary"]
    rows = {(r["experiment"], int(r["seed"]), int(r["step"]), r["column"]): r["accuracy"]
            for r in csv.DictReader(open(f"{seq.folder}/matrix.csv"))}
    first = json.load(open(seq.chain("full", 0)[1].metrics.path))
    assert float(rows[("full", 0, 2, "synthetic")]) == pytest.approx(first["tasks"]["synthetic"], abs=1e-4)
    assert rows[("full", 0, 0, "synthetic")] == "" and float(rows[("full", 0, 0, "source")]) == 50.0


def sealed(folder, obj: dict) -> str:
    """The text digests.write_json writes for `obj` (its sha256 inside)."""
    from vitpeft.digests import write_json

    write_json(folder / "sealed.json", obj)
    return (folder / "sealed.json").read_text()


def test_a_bad_step_metrics_file_is_one_line_naming_it_and_the_previous_report_stays(study, tmp_path, capsys):
    """Truncated, missing, or without a task's score: `vitpeft sequence-report` says which file and what to do,
    in one line, exit 2, and writes nothing: the report files and record of the run before are as they were."""
    from vitpeft import cli

    plan, root = study
    seq = plan.sequence
    score_every_row(plan)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(plan.cfg))
    record = tmp_path / "provenance" / "sequence-good.json"
    assert cli.main(["sequence-report", "--config", str(config), "--record", str(record)]) == 0
    before = {path: Path(path).read_bytes() for path in [*seq.files(), str(record)]}
    capsys.readouterr()

    path = seq.chain("lora", 0)[1].metrics.path
    good = Path(path).read_text()
    cases = [
        (good[: len(good) // 2], f"step metrics {path} is corrupt: not valid JSON ("),
        (None, f"step metrics missing: {path}; `vitpeft eval-step` writes it (run the workflow first)"),
        (json.dumps({**json.loads(good), "tasks": {"synthetic": 50.0}}),  # edited by hand: its digest no longer holds
         f"step metrics {path} is corrupt: the sha256 of its content is "),
        (sealed(tmp_path, {**digests.read_json(path), "tasks": {"synthetic": 50.0}}),  # sealed, a task's score missing
         f"{path}: expected a number under 'tasks.synthetic_orientation', found None; delete the file and rerun"),
    ]
    for text, words in cases:
        Path(path).unlink(missing_ok=True)
        if text is not None:
            Path(path).write_text(text)
        assert cli.main(["sequence-report", "--config", str(config), "--record", str(tmp_path / "provenance" /
                                                                                  "sequence-new.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vitpeft sequence-report: error: ") and words in err, err
        if text is not None and "not valid JSON" in words:
            assert err.rstrip().endswith("delete it and rerun the workflow (`vitpeft eval-step`)"), err
        assert {p: Path(p).read_bytes() for p in before} == before  # the previous report, whole
        assert sorted(os.listdir(tmp_path / "provenance")) == ["sequence-good.json"]
    Path(path).write_text(good)


def test_a_chained_step_stopped_midway_resumes_to_the_same_bits(study, tmp_path):
    from test_resume import StopAtStep, assert_same_weights

    from vitpeft.training import resume
    from vitpeft.training.draws import load_data
    from vitpeft.training.train import Run

    plan, _ = study
    step = plan.sequence.chain("lora", 0)[1]  # shared LoRA, step 2: starts from step 1's adapter
    spec = spec_lib.resolve(step.spec)
    cpu = torch.device("cpu")
    run = Run(spec, load_data(spec, cpu), cpu)
    with pytest.raises(resume.Preempted):
        run.loop(StopAtStep(run, 7), resume.folder_for(tmp_path / ".resume", spec))
    out = train(spec, tmp_path / "resumed", tmp_path / ".resume", device="cpu")
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 7
    assert_same_weights(out, Path(step.train.path))


def test_the_synthetic_task_without_the_synthetic_domains_is_refused_naming_the_key(tmp_path):
    cfg = base_config(tmp_path, ("dtd", "synthetic"))
    cfg["target"]["datasets"] = ["cifar100"]
    cfg["source"] = {"dataset": "imagenet"}
    with pytest.raises(VitpeftError, match=r"sequence\.tasks\[1\]: synthetic is the synthetic domains' target"):
        config_lib.load(cfg)


def test_the_report_averages_seeds_of_hand_made_matrices(tmp_path):
    from vitpeft.digests import write_json

    cfg = base_config(tmp_path, ("synthetic", "synthetic_orientation", "synthetic_hue"))
    cfg["seeds"] = [0, 1]
    cfg["sequence"].update(experiments=["full"], per_task=[])
    plan = Plan(config_lib.load(cfg))
    seq = plan.sequence
    hands = {0: HAND, 1: [[80.0], [70.0, 60.0], [40.0, 50.0, 85.0]]}
    sources = {0: [70.0, 60.0, 50.0], 1: [72.0, 58.0, 54.0]}
    for seed, matrix in hands.items():
        for step in seq.chain("full", seed):
            tasks = dict(zip(seq.tasks, matrix[step.index - 1]))
            write_json(step.metrics.path, {"tasks": tasks, "source": {"top1": sources[seed][step.index - 1]}})
    write_json(plan.pretrained_source.path, {"top1": 80.0})
    report.write(plan, tmp_path / "record.json")
    row = next(csv.DictReader(open(f"{seq.folder}/summary.csv")))
    accs = [report.average_accuracy(hands[s]) for s in (0, 1)]  # 71.67 and 58.33
    assert float(row["acc"]) == pytest.approx(sum(accs) / 2, abs=1e-4)
    assert float(row["acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5, abs=1e-4)  # sample std
    # seed 1: BWT ((40-80) + (50-60)) / 2 = -25; Chaudhry ((80-40) + (60-50)) / 2 = 25, as seed 0's
    assert float(row["bwt"]) == pytest.approx(-25.0) and float(row["forgetting_chaudhry"]) == pytest.approx(25.0)
    assert float(row["source_0"]) == 80.0 and float(row["source_3"]) == pytest.approx(52.0)
    page = (Path(seq.folder) / "summary.html").read_text()  # the HTML report's view: the summary and the matrix
    assert "<td>full</td>" in page and f"{float(row['acc']):.2f} ± " in page and "Accuracy matrix" in page
    assert (Path(seq.folder) / "heatmap-full.pdf").read_bytes().startswith(b"%PDF")
    colour_bar = report.heatmap_figure(plan, report.matrices(plan), "full").axes[1]
    assert colour_bar.get_ylabel() == "accuracy (%)" and colour_bar.get_ylim() == (0.0, 100.0)
