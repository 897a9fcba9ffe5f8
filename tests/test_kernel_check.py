"""`vitpeft check-bits`: the committed kernel check gives its committed bits here, and a machine that will not
reproduce a reference is told why in one line, before a demo spends its minutes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slurmctl import REPO
from vitpeft.training import kernel_check, kernels

BIN = Path(sys.executable).parent
REFERENCES = ["demo", "demo-continual"]


def check_bits(*args, **env) -> subprocess.CompletedProcess:
    outer = {k: v for k, v in os.environ.items() if k not in (*kernels.PIN, kernels.CPU_SWITCH)}
    return subprocess.run([BIN / "vitpeft", "check-bits", *map(str, args)], env={**outer, **env},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", REFERENCES)
def test_the_committed_check_gives_its_committed_bits_here(name):
    reference = REPO / "reference" / name
    committed = json.loads((reference / kernel_check.FILE).read_text())
    assert committed["kernels"]["reference_bits"] and committed["kernels"]["mkl_branch"] == "COMPATIBLE"
    done = check_bits("--reference", reference)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith(f"vitpeft check-bits: this machine reproduces the bits of {reference}: "), done.stdout
    assert done.stdout.count("\n") == 1


def test_the_check_can_fail_and_names_the_cause(tmp_path):
    """Unpinned, this machine's own kernels (AVX-512 here) give other bits: said once, with the cause first."""
    shutil.copytree(REPO / "reference" / "demo", tmp_path / "ref")
    done = check_bits("--reference", tmp_path / "ref", VITPEFT_CPU_PIN="0")
    assert done.returncode == 0  # a finding: the workflow still runs
    assert done.stdout == (f"vitpeft check-bits: this machine will not reproduce the bits of {tmp_path / 'ref'}: the "
                           "pin is turned off (reproducibility.cpu_pin: false) (the check's MKL's GEMM, ATen's "
                           "vectorised kernels, the tiny ViT's SGD steps, the tiny ViT's initialisation, augmentation and "
                           "AdamW steps gave other bits)\n")


def test_each_part_of_the_check_is_compared_on_its_own(tmp_path):
    """A reference whose GEMM digest alone differs: the line names MKL's GEMM and the CPUs (same pinned kernels)."""
    shutil.copytree(REPO / "reference" / "demo", tmp_path / "ref")
    path = tmp_path / "ref" / kernel_check.FILE
    record = json.loads(path.read_text())
    record["digests"]["gemm"] = "0" * 64
    path.write_text(json.dumps(record))
    done = check_bits("--reference", tmp_path / "ref")
    assert "computes other bits than the reference's" in done.stdout
    assert done.stdout.rstrip().endswith("(the check's MKL's GEMM gave other bits)")


def test_write_refuses_a_machine_without_the_pinned_kernels(tmp_path):
    done = check_bits("--reference", tmp_path, "--write", VITPEFT_CPU_PIN="0")
    assert done.returncode == 2 and not (tmp_path / kernel_check.FILE).exists()
    assert done.stderr == ("vitpeft check-bits: error: this machine's CPU kernels are not the pinned ones (the pin is "
                           "turned off (reproducibility.cpu_pin: false)): a reference made here would not be "
                           "reproducible elsewhere\n")


@pytest.mark.parametrize("content, said", [
    (None, "the reference {ref} has no kernel-check.json; `vitpeft check-bits --reference {ref} --write` (run by "
           "`make demo-reference`) writes it"),
    ("{", "the reference's {ref}/kernel-check.json is not valid JSON (Expecting property name enclosed in double "
          "quotes: line 1 column 2 (char 1)); restore it with git"),
    ("[]", "the reference's {ref}/kernel-check.json is not a kernel check (no digests); restore it with git"),
])  # fmt: skip
def test_an_unreadable_reference_is_one_line_and_exit_2_before_any_work(tmp_path, content, said):
    if content is not None:
        (tmp_path / kernel_check.FILE).write_text(content)
    done = check_bits("--reference", tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"vitpeft check-bits: error: {said.format(ref=tmp_path)}\n"


def test_the_bits_trace_names_the_first_op_whose_output_differs(tmp_path):
    """scripts/bits-trace.py, the tool that found MKL's vector math: a rerun gives the same trace, and --diff names
    the first differing call and the ops before it."""
    vitpeft = Path(sys.executable).parent / "vitpeft"
    subprocess.run([vitpeft, "make-synthetic", "--config", REPO / "config/demo.yaml", "--out", tmp_path / "syn"],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    script = REPO / "scripts" / "bits-trace.py"
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, script, "--config", REPO / "config/demo.yaml", "--data",
                               tmp_path / "syn/source/train", "--steps", "1", "--out", tmp_path / f"{name}.json"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    first = json.loads((tmp_path / "a.json").read_text())
    assert first == json.loads((tmp_path / "b.json").read_text()) and len(first) > 1000
    assert {"aten.sqrt.default", "aten.erfinv_.default"} <= {op for op, _ in first}  # AdamW's and the initialisation's
    said = lambda: subprocess.run([sys.executable, script, "--diff", tmp_path / "a.json", tmp_path / "b.json"],  # noqa: E731
                                  capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert said() == f"the same bits in all {len(first)} calls\n"
    moved = next(i for i, (op, _) in enumerate(first) if op == "aten.sqrt.default")
    first[moved][1] = "0" * 12
    (tmp_path / "a.json").write_text(json.dumps(first))
    assert said().startswith(f"the outputs part at call {moved + 1} of {len(first)}: aten.sqrt.default (after ")
