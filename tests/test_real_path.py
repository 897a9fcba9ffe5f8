"""The paper's study through Snakemake with only its sizes shrunk: the real rules from the real inputs.

config/config.yaml as a user runs it, with a tiny ViT of the paper's depth, a
few steps and a few images, and every input made here in its official
format: a CIFAR-100 python tarball and a DINO-format checkpoint served over
HTTP from 127.0.0.1 (downloaded through torchvision's code and vitpeft's own
fetch), and an ImageFolder of JPEGs standing in for ILSVRC2012 (prepared by
the shard jobs). Every rule of the real study runs: download_target,
prepare_target, fetch_checkpoint, prepare_imagenet_shard, index_imagenet,
extract_features, train, every evaluation and the report.
"""

import copy
import math
from collections import Counter

import pandas as pd
import pytest
import torch
import yaml
from httpserver import serve

import fake_datasets as fakes
import slurmctl
from slurmctl import REPO

pytestmark = pytest.mark.workflow


def planned(project, config) -> Counter:
    """The jobs `snakemake -n all` would run, without the target rule itself (listed whenever anything runs)."""
    jobs = slurmctl.scheduled(project, config)
    jobs.pop(("all", ""), None)
    return jobs

TINY = {"name": "vit_base_patch16_224", "img_size": 32,
        "kwargs": {"patch_size": 8, "embed_dim": 16, "depth": 12, "num_heads": 2}}  # the paper's depth
IMAGENET_CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 6, 2
PAPER_ROWS = ["full", "top3", "linear", "lora_r4", "lora_r8", "lora_r16", "block_p1", "block_p2", "block_p3", "block_p4"]


def tiny_dino_checkpoint(path):
    """A DINO-format backbone file: timm's key names, no head, random weights (what DINO publishes, in small)."""
    import timm

    model = timm.create_model(TINY["name"], pretrained=False, num_classes=0, img_size=TINY["img_size"], **TINY["kwargs"])
    torch.save({key: value.contiguous() for key, value in model.state_dict().items()}, path)


def jpeg_imagenet(root):
    """train/ and val/ with one folder per class (WordNet-like names), a few JPEGs of uneven sizes each."""
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for label in range(IMAGENET_CLASSES):
            for index in range(count):
                fakes.write_jpeg(root / split / f"n0144{label:04d}" / f"{split}_{label}_{index}.JPEG", label, index)


def real_config(url, md5s, imagenet) -> dict:
    """config/config.yaml with sizes shrunk and the inputs pointed at this test's server and folder."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["name"] = "realpath"
    cfg["backbone"].update(model=TINY, url=f"{url}/dino_vitbase16_pretrain.pth")
    cfg["target"]["mirrors"] = {"cifar100": {"url": url, "md5": md5s}}
    cfg["source"].update(imagenet_dir=str(imagenet), resize=36, crop=32, shards=2, query_shards=1, k=[5])
    cfg["train"].update(steps=2, batch_size=16, warmup_steps=1, checkpoint_every=1, log_every=1)
    cfg["resources"] = {group: {"cpus": 1, "mem_mb": 2000, "runtime": 10} for group in ("shard", "prepare")}
    cfg["resources"].update({group: {"gpu": 0, "cpus": 1, "mem_mb": 2000, "runtime": 10} for group in ("train", "evaluate")})
    return cfg


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A project where the shrunk paper study ran to the end, its inputs served while it ran."""
    root = tmp_path_factory.mktemp("realpath")
    public = root / "server"
    archive, fake = fakes.cifar100_archive(public)
    tiny_dino_checkpoint(public / "dino_vitbase16_pretrain.pth")
    jpeg_imagenet(root / "ILSVRC2012")
    project = slurmctl.make_project(root / "project")
    with serve(public) as url:
        cfg = real_config(url, fake.md5s, root / "ILSVRC2012")
        config = slurmctl.write_config(project, cfg)
        slurmctl.snakemake(project, "all", "--cores", "2", "--configfile", config, timeout=1500)
        without_source = copy.deepcopy(cfg)
        without_source.update(name="nosource", experiments=cfg["experiments"][2:4])  # linear, lora_r4
        without_source["source"]["enabled"] = False
        other = slurmctl.write_config(project, without_source)
        slurmctl.snakemake(project, "all", "--cores", "2", "--configfile", other, timeout=900)
    return {"project": project, "config": config, "cfg": cfg, "fake": fake}


def test_every_real_rule_ran_and_the_table_has_every_row_with_finite_numbers(study):
    project = study["project"]
    table = pd.read_csv(project / "results" / "realpath" / "table.csv")
    assert table["experiment"].tolist() == ["pretrained"] + PAPER_ROWS
    assert table[["target_acc", "source_acc", "mean"]].map(math.isfinite).all().all()
    assert table.set_index("experiment").loc["lora_r8", "paper_target_acc"] == 88.27
    logs = project / "logs" / "realpath"
    for rule in ("download_target", "prepare_target", "prepare_imagenet", "fetch_checkpoint", "index_imagenet",
                 "extract_features", "train", "eval_target", "eval_source", "report"):
        assert list(logs.glob(f"**/{rule}*")) or (logs / rule).is_dir(), rule
    archive = project / "data" / "downloads" / "cifar100" / "cifar-100-python.tar.gz"
    assert fakes.md5(archive) == study["fake"].md5s["cifar-100-python.tar.gz"]  # served, checked, kept
    shards = sorted(p.name for p in (project / "cache" / "imagenet").glob("*/bank/shard-*"))
    assert shards == ["shard-00000-of-00002", "shard-00001-of-00002"]


def test_the_source_scores_come_from_the_prepared_jpegs_and_the_untouched_backbone_is_shared(study):
    table = pd.read_csv(study["project"] / "results" / "realpath" / "table.csv").set_index("experiment")
    # Linear probing leaves the backbone untouched: its source score is the pretrained one, exactly;
    # and so is every routed view (LoRA off, new blocks out), scored from the same feature cache.
    assert table.loc["linear", "source_acc"] == table.loc["pretrained", "source_acc"]
    for name in ("lora_r4", "lora_r8", "lora_r16", "block_p1", "block_p2", "block_p3", "block_p4"):
        assert table.loc[name, "source_acc_routed"] == table.loc["pretrained", "source_acc"], name
    metrics = next((study["project"] / "results" / "realpath" / "metrics" / "pretrained").glob("source-*.json"))
    source = yaml.safe_load(metrics.read_text())
    assert source["bank_count"] == IMAGENET_CLASSES * TRAIN_PER_CLASS
    assert source["query_count"] == IMAGENET_CLASSES * VAL_PER_CLASS


def test_a_finished_study_plans_nothing_and_an_edit_plans_only_its_experiment(study):
    project, cfg = study["project"], study["cfg"]
    assert planned(project, study["config"]) == Counter()
    edited = copy.deepcopy(cfg)
    edited["experiments"][4]["train"]["lr"] = 0.01  # lora_r8
    config = slurmctl.write_config(project, edited, "edited.yaml")
    assert planned(project, config) == slurmctl.jobs_of(
        ("train", "lora_r8"), ("eval_target", "lora_r8"), ("eval_source", "lora_r8"), ("report", None))


def test_with_the_source_column_off_the_study_runs_end_to_end_without_imagenet_jobs(study):
    project = study["project"]
    table = pd.read_csv(project / "results" / "nosource" / "table.csv")
    assert table["experiment"].tolist() == ["pretrained", "linear", "lora_r4"]
    assert table["target_acc"].map(math.isfinite).all() and table["source_acc"].isna().all()
    assert not list((project / "logs" / "nosource").glob("**/eval_source*"))
    assert not list((project / "logs" / "nosource").glob("**/extract_features*"))
