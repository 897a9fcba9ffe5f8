"""The plan: every output's key changes exactly when something it depends on changes.

This is what rerun-only-what-changed rests on: Snakemake runs a job when its
keyed output is missing, so an edit must give new keys to exactly the outputs
it affects, and nothing else (no file dates, no machine-specific paths).
"""

import copy
from pathlib import Path

import pytest
import yaml

from vitpeft.study import config
from vitpeft.study import paths
from vitpeft.errors import VitpeftError
from vitpeft.study.plan import PRETRAINED, Plan

REPO = Path(__file__).resolve().parents[1]


def raw_paper() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def plan_of(raw: dict) -> Plan:
    return Plan(config.load(copy.deepcopy(raw)))


def keys(plan: Plan) -> dict:
    """Every keyed output of the plan, by a name that does not depend on the keys."""
    out = {"backbone": plan.backbone.key, "report": plan.report.key}
    for name in ("source", "features", "curve_data", "pretrained_source"):
        node = getattr(plan, name)
        if node is not None:
            out[name] = node.key
    for dataset, node in plan.pretrained_target.items():
        out[f"pretrained_target/{dataset}"] = node.key
    for run in plan.runs.values():
        for column in ("train", "target", "source", "curve", "interpolation", "wise"):
            node = getattr(run, column)
            if node is not None:
                out[f"{column}/{run.label}"] = node.key
    return out


def changed(before: Plan, after: Plan) -> set:
    a, b = keys(before), keys(after)
    return {name for name in a.keys() | b.keys() if a.get(name) != b.get(name)}


def run_outputs(dataset, exp, seed=0, columns=("train", "target", "source")) -> set:
    return {f"{column}/{dataset}/{exp}/seed{seed}" for column in columns}


def test_the_same_config_plans_the_same_keys_whatever_its_key_order_or_file_name():
    raw = raw_paper()
    shuffled = dict(reversed(list(raw.items())))
    assert keys(plan_of(raw)) == keys(plan_of(shuffled))


def test_editing_one_experiment_changes_only_its_outputs_and_the_report():
    raw = raw_paper()
    edited = copy.deepcopy(raw)
    edited["experiments"][3]["train"]["lr"] = 0.02  # lora_r4
    assert changed(plan_of(raw), plan_of(edited)) == run_outputs("cifar100", "lora_r4") | {"report"}


def test_the_shared_train_section_changes_every_run_but_not_the_untouched_backbones_rows():
    raw = raw_paper()
    edited = copy.deepcopy(raw)
    edited["train"]["momentum"] = 0.8
    names = changed(plan_of(raw), plan_of(edited))
    assert {name for name in names if "pretrained" in name or name in ("features", "source", "backbone")} == set()
    assert run_outputs("cifar100", "full") <= names


def test_adding_a_seed_adds_only_that_seeds_runs_and_removing_one_only_the_report():
    raw = raw_paper()
    more = copy.deepcopy(raw)
    more["seeds"] = [0, 1]
    before, after = plan_of(raw), plan_of(more)
    added = {name for name in keys(after) if name not in keys(before)}
    assert {name for name in changed(before, after) if name not in added} == {"report"}
    assert all(name.endswith("/seed1") for name in added)
    assert changed(after, before) - {name for name in keys(after) if name.endswith("/seed1")} == {"report"}


def test_knn_settings_change_only_the_source_scores_and_the_head_less_target_knn():
    raw = raw_paper()
    edited = copy.deepcopy(raw)
    edited["source"]["temperature"] = 0.1
    names = changed(plan_of(raw), plan_of(edited))
    expected = {f"source/cifar100/{exp['name']}/seed0" for exp in raw["experiments"] if exp["method"] != "linear"}
    assert names == expected | {"pretrained_source", "pretrained_target/cifar100", "report"}


def test_the_imagenet_folder_and_data_dir_are_places_not_content():
    raw = raw_paper()
    moved = copy.deepcopy(raw)
    moved["source"]["imagenet_dir"] = "/site/ilsvrc2012"
    moved["data_dir"] = "/scratch/vitpeft-data"
    moved["cache_dir"] = "/scratch/vitpeft-cache"
    assert changed(plan_of(raw), plan_of(moved)) == set()
    assert plan_of(moved).features.path.startswith("/scratch/vitpeft-cache/features/")


def test_preparing_imagenet_differently_reprepares_and_rescores_the_source_only():
    raw = raw_paper()
    edited = copy.deepcopy(raw)
    edited["source"]["bank_per_class"] = 100
    names = changed(plan_of(raw), plan_of(edited))
    assert {"source", "features", "pretrained_source"} <= names
    assert not any(name.startswith(("train/", "target/")) for name in names)


def test_another_backbone_changes_everything_it_feeds():
    raw = raw_paper()
    edited = copy.deepcopy(raw)
    edited["backbone"]["url"] = "https://example.org/other.pth"
    names = changed(plan_of(raw), plan_of(edited))
    assert {"backbone", "features"} <= names and run_outputs("cifar100", "full") <= names
    assert "source" not in names  # the prepared ImageNet caches do not depend on the backbone


def test_the_paper_grid_runs_ten_imagenet_passes_not_eighteen():
    """The untouched backbone's features serve the pretrained row, linear probing and every routed view."""
    plan = plan_of(raw_paper())
    passes = [plan.features] + [run.source for run in plan.runs.values() if run.source is not None]
    assert len(passes) == 10
    assert plan.source_metrics(plan.find("cifar100", "linear", 0)) is plan.pretrained_source


def test_curve_steps_add_step_zero_and_one_curve_job_per_run():
    raw = raw_paper()
    raw["curve"] = {"steps": [10, 100, 10000]}
    plan = plan_of(raw)
    assert plan.curve_steps() == [0, 10, 100, 10000]
    assert all(run.spec["train"]["curve_steps"] == [0, 10, 100, 10000] for run in plan.runs.values())
    assert all(run.curve is not None for run in plan.runs.values())
    assert plan.curve_data.path.startswith("cache/subsets/")


def test_every_output_stays_inside_the_study_or_the_data_folder():
    plan = plan_of(raw_paper())
    for run in plan.runs.values():
        for node in (run.train, run.target, run.source):
            if node is not None:
                assert node.path.startswith(f"results/{plan.name}/"), node.path
    assert plan.backbone.path.startswith(f"{plan.data}/backbone/"), plan.backbone.path
    for node in (plan.features, plan.source):
        assert node.path.startswith(f"{plan.cache}/"), node.path


def test_a_job_with_a_stale_key_is_refused_with_the_reason():
    plan = plan_of(raw_paper())
    run = plan.find("cifar100", "full", 0)
    assert plan.find("cifar100", "full", "0", run.train.key) is run
    with pytest.raises(VitpeftError, match="the config changed since this job was planned"):
        plan.find("cifar100", "full", 0, "0" * 12)
    with pytest.raises(VitpeftError, match="no run cifar100/fulll/seed0"):
        plan.find("cifar100", "fulll", 0)
    assert plan.pretrained_spec()["name"] == PRETRAINED


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/etc", "a\\b", "x\0y"])
def test_inside_refuses_any_name_that_is_not_one_folder(name):
    with pytest.raises(VitpeftError, match="cannot name a folder inside"):
        paths.inside("results", "paper", name)


def test_inside_joins_safe_names():
    assert paths.inside("results", "paper", "runs", "lora_r8.v2") == "results/paper/runs/lora_r8.v2"
    assert paths.inside("/abs/data", "imagenet") == "/abs/data/imagenet"


def test_adding_a_target_dataset_adds_only_its_runs_and_the_report():
    raw = raw_paper()
    more = copy.deepcopy(raw)
    more["target"]["datasets"] = ["cifar100", "flowers102"]
    before, after = plan_of(raw), plan_of(more)
    added = {name for name in keys(after) if name not in keys(before)}
    assert {name for name in changed(before, after) if name not in added} == {"report"}
    assert added == {f"{column}/flowers102/{exp['name']}/seed0" for exp in raw["experiments"]
                     for column in ("train", "target", "source") if not (column == "source" and exp["method"] == "linear")
                     } | {"pretrained_target/flowers102"}
    flowers = after.find("flowers102", "full", 0).spec
    assert flowers["num_classes"] == 102 and flowers["data"]["val"].endswith("/val")  # its official val split
    assert after.find("cifar100", "full", 0).spec["data"]["val"] is None


def test_an_imagefolder_dataset_is_keyed_by_its_root_and_class_count(tmp_path):
    (tmp_path / "mine" / "val").mkdir(parents=True)
    raw = raw_paper()
    raw["target"]["datasets"] = ["mine"]
    raw["target"]["imagefolders"] = {"mine": {"root": str(tmp_path / "mine"), "num_classes": 7}}
    plan = plan_of(raw)
    assert plan.find("mine", "full", 0).spec["num_classes"] == 7
    assert plan.find("mine", "full", 0).spec["data"]["val"] is None  # no test/: val/ is the scored split
    (tmp_path / "mine" / "test").mkdir()
    assert plan_of(raw).find("mine", "full", 0).spec["data"]["val"].endswith("/val")
    moved = copy.deepcopy(raw)
    moved["target"]["imagefolders"]["mine"]["root"] = str(tmp_path / "other")
    assert plan_of(moved).targets["mine"].key != plan.targets["mine"].key


def test_a_mirror_url_is_a_place_but_its_md5s_are_content():
    raw = raw_paper()
    mirrored = copy.deepcopy(raw)
    mirrored["target"]["mirrors"] = {"cifar100": {"url": "http://mirror.example/cifar"}}
    assert changed(plan_of(raw), plan_of(mirrored)) == set()
    mirrored["target"]["mirrors"]["cifar100"]["md5"] = {"cifar-100-python.tar.gz": "0" * 32}
    assert "train/cifar100/full/seed0" in changed(plan_of(raw), plan_of(mirrored))


def test_the_source_normalisation_and_precision_rekey_the_feature_cache_but_not_the_target_knn():
    raw = raw_paper()
    for change in ({"mean": [0.5, 0.5, 0.5]}, {"precision": "fp16"}):
        edited = copy.deepcopy(raw)
        edited["source"].update(change)
        names = changed(plan_of(raw), plan_of(edited))
        assert {"features", "pretrained_source"} <= names and "pretrained_target/cifar100" not in names
        assert not any(name.startswith(("train/", "target/")) for name in names)


def test_a_second_config_file_with_the_studys_name_is_a_clash_until_its_own_report(tmp_path, monkeypatch):
    """results/<name>/ holds one config's report (its provenance names the file); another file would rewrite it."""
    monkeypatch.chdir(tmp_path)
    plan, edited = plan_of(raw_paper()), raw_paper()
    edited["train"]["lr"] = 0.01
    edited = plan_of(edited)
    assert plan.name_clash("config/config.yaml") is None  # nothing reported yet
    record = Path(plan.report.path)
    record.parent.mkdir(parents=True)
    record.write_text('{"config": {"path": "config/config.yaml"}}')
    assert plan.name_clash("config/config.yaml") is None and plan.name_clash("./config/config.yaml") is None
    assert plan.name_clash("config/copy.yaml") is None  # the same plan: its report is the one there, nothing to rewrite
    assert edited.name_clash("config/copy.yaml").startswith(
        "results/paper/ holds the report of config/config.yaml, and config/copy.yaml has the same study name 'paper'")
    assert edited.name_clash("config/config.yaml") is None  # an edit of the study's own file reruns it, as it should
    record.write_text('{"config": {"path": "/home/alice/vitpeft/config/config.yaml"}}')  # pulled from her clone
    assert edited.name_clash("config/config.yaml") is None and edited.name_clash("config/copy.yaml")


def test_the_alpha_choice_rekeys_only_the_whole_bank_scores_and_the_report():
    """On a dataset with a validation split (on one without, choosing on held-out data changes training: below)."""
    raw = raw_paper()
    raw["target"]["datasets"] = ["dtd"]
    raw["interpolation"] = {"enabled": True}
    on_test = copy.deepcopy(raw)
    on_test["interpolation"]["choose_on"] = "test"
    names = changed(plan_of(raw), plan_of(on_test))
    assert names == {"report"} | {f"wise/{run.label}" for run in plan_of(raw).runs.values() if run.wise}
    assert len(names) == 1 + 9  # every run but linear's


def test_choosing_alpha_on_held_out_data_holds_the_slice_out_of_training_where_there_is_no_validation_split():
    raw = raw_paper()
    raw["target"]["datasets"] = ["cifar100", "dtd"]  # no validation split; an official one
    raw["interpolation"] = {"enabled": True}
    plan = plan_of(raw)
    for run in plan.runs.values():
        assert run.spec["train"].get("hold_out") is (True if run.dataset == "cifar100" else None), run.label
    on_test = copy.deepcopy(raw)
    on_test["interpolation"]["choose_on"] = "test"  # the upper bound needs no held-out data: the paper's training
    assert all("hold_out" not in run.spec["train"] for run in plan_of(on_test).runs.values())
    best_val = copy.deepcopy(raw)
    best_val["train"]["selection"] = "best_val"  # best_val holds the same slice out already: no second flag
    assert all("hold_out" not in run.spec["train"] for run in plan_of(best_val).runs.values())
    off = plan_of(raw_paper())
    assert changed(off, plan_of(on_test)) & {f"train/{run.label}" for run in off.runs.values()} == set()
