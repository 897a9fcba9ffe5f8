"""A rule's runtime must be well above the SLURM profile's warning-signal lead, or planning refuses."""

import pytest
import yaml

import slurmctl
from vitpeft import cli
from vitpeft.study import signal_lead

RESOURCES = {"train": {"runtime": 360}, "evaluate": {"runtime": 120}}


def test_the_lead_is_read_from_sbatchs_extra_arguments():
    assert signal_lead.lead_seconds("'--signal=USR1@300'") == 300
    assert signal_lead.lead_seconds("--signal=B:SIGUSR1@90 --exclusive") == 90
    assert signal_lead.lead_seconds("--exclusive") is None and signal_lead.lead_seconds(None) is None


def test_a_runtime_under_twice_the_lead_is_named_with_both_numbers():
    profile = {"train": {"slurm_extra": "'--signal=USR1@300'"}}
    assert signal_lead.problems(profile, RESOURCES) == []  # the paper config: 360 min
    (problem,) = signal_lead.problems(profile, {**RESOURCES, "train": {"runtime": 5}})
    assert problem.startswith("rule train: runtime 5 min (300 s) is not well above the SLURM warning signal's "
                              "lead time (300 s, --signal=...@300)")
    assert "set resources.train.runtime to at least 10 min" in problem
    assert signal_lead.problems(profile, {**RESOURCES, "train": {"runtime": 10}}) == []
    overridden = {"train": {"slurm_extra": "'--signal=USR1@300'", "runtime": "9"}}
    (problem,) = signal_lead.problems(overridden, RESOURCES)
    assert "runtime 9 min (540 s)" in problem and "set set-resources train:runtime to at least 10 min" in problem


@pytest.fixture
def short_runtime(tmp_path):
    project = slurmctl.make_project(tmp_path / "project")
    cfg = slurmctl.reduced_demo("short")
    cfg["resources"]["train"]["runtime"] = 5  # the profile warns 300 s before the limit
    return project, slurmctl.write_config(project, cfg)


def test_planning_with_the_slurm_profile_refuses_it_before_any_job(short_runtime):
    project, cfg_path = short_runtime
    result = slurmctl.snakemake(project, "-n", "all", "--profile", "slurm", "--configfile", cfg_path,
                                timeout=120, check=False)
    assert result.returncode != 0, result.stdout
    assert "rule train: runtime 5 min (300 s) is not well above" in result.stdout, result.stdout
    assert "Job stats" not in result.stdout
    # without the profile nothing signals the job: a local run plans as before
    assert "Job stats" in slurmctl.snakemake(project, "-n", "all", "--configfile", cfg_path, timeout=120).stdout


def test_vitpeft_check_flags_it(short_runtime, capsys, monkeypatch):
    project, cfg_path = short_runtime
    monkeypatch.chdir(project)
    assert yaml.safe_load((project / "slurm" / "config.yaml").read_text())["set-resources"]["train"]
    assert cli.main(["check", "--config", str(cfg_path)]) == 2
    out = capsys.readouterr().out
    assert "FAIL  slurm runtime: rule train: runtime 5 min (300 s) is not well above" in out, out
