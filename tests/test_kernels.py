"""The CPU kernel pin: the same bits whatever the outer environment says the kernels should be."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import TINY_MODEL
from vitpeft.data import store
from vitpeft.study import spec as spec_lib
from vitpeft.training import kernels

BIN = Path(sys.executable).parent
# What makes kernels pick another code path on another machine, set in the outer environment.
OTHER_MACHINE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "SSE41"}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    """A demo-like training job: full fine-tuning of a tiny ViT, 40 SGD steps from a fixed seed."""
    root = tmp_path_factory.mktemp("kernels")
    rng = np.random.default_rng(0)
    store.save(root / "data", rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), np.arange(64) % 4, list("abcd"))
    spec = spec_lib.resolve({
        "name": "pin", "method": "full", "model": TINY_MODEL, "num_classes": 4, "data": {"train": str(root / "data")},
        "train": {"steps": 40, "batch_size": 16, "warmup_steps": 4, "lr": 0.05, "log_every": 20, "precision": "fp32"},
    })
    (root / "spec.yaml").write_text(spec_lib.dump(spec))
    return root / "spec.yaml"


def train(spec_file, out: Path, **env) -> dict:
    """`vitpeft train` as a rule runs it (one thread), in a process whose outer environment is `env`."""
    outer = {k: v for k, v in os.environ.items() if k not in (*OTHER_MACHINE, kernels.CPU_SWITCH)}
    done = subprocess.run(
        [BIN / "vitpeft", "train", "--spec", spec_file, "--out", out, "--resume-dir", out.parent / f"{out.name}-resume",
         "--device", "cpu"],
        env={**outer, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return load_file(out / "trainable.safetensors")


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_pinned_runs_give_the_same_bits_whatever_the_outer_environment(spec_file, tmp_path):
    here = train(spec_file, tmp_path / "here")
    elsewhere = train(spec_file, tmp_path / "elsewhere", **OTHER_MACHINE)
    assert same_bits(here, elsewhere)
    record = json.loads((tmp_path / "here" / "summary.json").read_text())["kernels"]
    assert record["pinned"] and record["reference_bits"] and record["pin"] == kernels.PIN, record
    assert (record["mkl_branch"], record["aten_capability"]) == ("COMPATIBLE", "AVX2")
    assert record["mkldnn"] is False and record["nnpack"] is False and record["threads"] == 1
    assert record["why_not"] is None and record["cpu"] == kernels.cpu()


def test_without_the_pin_the_same_pair_differs(spec_file, tmp_path):
    """So the test above can fail: the outer environment does change the bits when nothing pins it."""
    here = train(spec_file, tmp_path / "here", VITPEFT_CPU_PIN="0")
    elsewhere = train(spec_file, tmp_path / "elsewhere", VITPEFT_CPU_PIN="0", **OTHER_MACHINE)
    assert not same_bits(here, elsewhere)
    record = json.loads((tmp_path / "here" / "summary.json").read_text())["kernels"]
    assert not record["pinned"] and not record["reference_bits"]
    assert record["why_not"] == "the pin is turned off (reproducibility.cpu_pin: false)"


def cnr_branches(stdout: str) -> set:
    """The CNR branch every MKL call printed under MKL_VERBOSE=1 ('... CNR:COMPATIBLE Dyn:0 ...')."""
    return set(re.findall(r"\bCNR:(\S+)", stdout))


def pinned_run(spec_file, out: Path, pin: dict, expected: dict) -> subprocess.CompletedProcess:
    """`vitpeft train` whose pin asks for `pin` (and expects `expected` back), with MKL and oneDNN printing each call."""
    code = (f"from vitpeft.training import kernels; kernels.PIN.update({pin!r}); kernels.EXPECTED.update({expected!r})"
            f"\nfrom vitpeft.cli import main; raise SystemExit(main())")
    env = {k: v for k, v in os.environ.items() if k not in (*OTHER_MACHINE, kernels.CPU_SWITCH)}
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "--spec", spec_file, "--out", out, "--resume-dir", f"{out}-resume",
         "--device", "cpu"],
        env={**env, "OMP_NUM_THREADS": "1", "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}, capture_output=True,
        text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_record_says_what_mkl_ran_as_mkl_itself_prints_it(spec_file, tmp_path):
    """Every MKL call of a pinned job runs COMPATIBLE, no oneDNN primitive runs, and the record says so."""
    done = pinned_run(spec_file, tmp_path / "run", {}, {})
    assert cnr_branches(done.stdout) == {"COMPATIBLE"}
    assert "onednn_verbose" not in done.stdout or ",exec," not in done.stdout
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["kernels"]
    assert record["mkl_branch"] == "COMPATIBLE" and record["reference_bits"] is True


def test_a_branch_mkl_refuses_on_this_cpu_is_recorded_as_the_auto_branch_it_ran(spec_file, tmp_path):
    """A pin asking MKL for a branch this CPU lacks (AVX10.2: no CPU of this project's machines has it): MKL falls
    back to AUTO, says so in its own verbose lines, and the record says AUTO, not the branch asked for."""
    done = pinned_run(spec_file, tmp_path / "run", {"MKL_CBWR": "AVX10_2"}, {"mkl_branch": "AVX10_2"})
    assert cnr_branches(done.stdout) == {"AUTO"}, "this CPU runs AVX10.2: pick another branch it lacks"
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["kernels"]
    assert record["mkl_branch"] == "AUTO" and record["reference_bits"] is False
    cpu = kernels.cpu()
    assert record["why_not"].startswith(f"MKL ran its AUTO branch, not AVX10_2: "), record["why_not"]
    assert f"{cpu['vendor']} CPU ({cpu['model']})" in record["why_not"]
    assert f"training on cpu" in done.stderr and f"CPU kernels not the pinned ones: {record['why_not']}" in done.stderr


def observed(**changes) -> dict:
    """A pinned record's observations on an Intel AVX2 x86-64, with `changes`."""
    seen = {"mkl_branch": "COMPATIBLE", "mkl_auto_branch": "AVX2", "aten_capability": "AVX2", "mkldnn": False,
            "nnpack": False, "threads": 1, "torch": "2.14.1+cu130", "vector_math": kernels.VM_BYPASSED,
            "cpu": {"arch": "x86_64", "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R)", "avx2": True}}
    return {**seen, **changes}


AMD = {"arch": "x86_64", "vendor": "AuthenticAMD", "model": "AMD EPYC 7B13 64-Core Processor", "avx2": True}


@pytest.mark.parametrize("seen, why", [
    (observed(), None),
    (observed(cpu={**AMD, "arch": "aarch64"}, mkl_branch=None, aten_capability="SVE256"),
     "not an x86-64 CPU (aarch64): its kernels are its own"),
    (observed(aten_capability="DEFAULT", cpu={**AMD, "avx2": False}), "ATen ran its DEFAULT kernels, not AVX2: this CPU "
     "has no AVX2"),
    (observed(mkl_branch=None), "MKL's branch cannot be read (libtorch_cpu exports no mkl_serv_cbwr_get: a torch built "
     "without MKL?)"),
    (observed(mkldnn=True), "mkldnn on: the command did not settle its CPU kernels (kernels.use)"),
    (observed(vector_math="MKL VM"), "exp, log, sqrt, erfinv and tanh ran on MKL's vector math, whose kernels follow "
     "the CPU: the command did not settle its CPU kernels (kernels.use)"),
])  # fmt: skip
def test_each_refusal_is_one_sentence_naming_its_cause(seen, why, monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert kernels.why_not(seen) == why


def test_mkl_running_auto_on_an_amd_cpu_names_the_vendor(monkeypatch):
    """What the old AVX2 pin did on AMD, said as the record now says it (the branch as MKL reports it)."""
    monkeypatch.setitem(kernels.EXPECTED, "mkl_branch", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert kernels.why_not(observed(mkl_branch="AUTO", cpu=AMD)) == (
        "MKL ran its AUTO branch, not AVX2: this is a non-Intel AuthenticAMD CPU (AMD EPYC 7B13 64-Core Processor), "
        "where MKL runs only AUTO and COMPATIBLE and fell back to AUTO")


def test_the_pin_asks_mkl_for_the_branch_it_honours_on_every_vendor():
    """oneMKL runs only AUTO and COMPATIBLE on non-Intel CPUs (its developer guide, 'Specifying Code Branches')."""
    assert kernels.PIN["MKL_CBWR"] == kernels.EXPECTED["mkl_branch"] == "COMPATIBLE"

