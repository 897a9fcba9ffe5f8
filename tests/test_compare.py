"""`vitpeft compare`: a table against the repository's own demo reference, copied into tmp_path and edited.

Every test runs the command on real files: reference/demo/ as `make
demo-reference` wrote it, and a user's results/demo/ made from a copy of it
(its provenance under the name a report gives it), one thing changed at a time.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest

from slurmctl import REPO
from vitpeft.cli import main
from vitpeft.report import compare
from vitpeft.training import kernels

REFERENCE = REPO / "reference" / "demo"
TABLE, REF = "results/demo/table.csv", "reference/demo"
INTEL = {"arch": "x86_64", "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Processor", "avx2": True}
AMD = {"arch": "x86_64", "vendor": "AuthenticAMD", "model": "AMD EPYC 7B13 64-Core Processor", "avx2": True}
CPU = {"pinned": True, "pin": kernels.PIN, "mkl_branch": "COMPATIBLE", "mkl_auto_branch": "AVX512_E1",
       "aten_capability": "AVX2", "mkldnn": False, "nnpack": False, "threads": 1, "torch": "2.14.1+cu130", "cpu": INTEL,
       "reference_bits": True, "why_not": None}  # fmt: skip
CODE = {"vitpeft": "0.1.0", "commit": "a" * 40, "modified": False}


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """tmp_path holding reference/demo/ (the repository's) and results/demo/ (a demo that gave the same table)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REFERENCE, REF)
    record = json.loads((REFERENCE / "provenance.json").read_text())
    (tmp_path / "results/demo/provenance").mkdir(parents=True)
    shutil.copy(REFERENCE / "table.csv", TABLE)
    shutil.copy(REFERENCE / "provenance.json", f"results/demo/provenance/report-{record['report_key']}.json")
    return tmp_path


def rows(path) -> list:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, table: list) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)


def provenance(where: str) -> tuple:
    """(path, record) of the user's report provenance ('results') or the reference's ('reference')."""
    if where == "results":
        path = next(Path("results/demo/provenance").glob("report-*.json"))
    else:
        path = Path(REF) / "provenance.json"
    return path, json.loads(path.read_text())


def edit_provenance(where: str, **changes) -> None:
    path, record = provenance(where)
    record.update(changes)
    path.write_text(json.dumps(record))


def run(capsys, table=TABLE, reference=REF) -> tuple:
    code = main(["compare", "--table", str(table), "--reference", str(reference)])
    out, err = capsys.readouterr()
    return code, out, err


def cells() -> int:
    """The reference's cells as the command counts them: per row, every column but the keys, diffs and stds."""
    header = rows(REFERENCE / "table.csv")[0].keys()
    per_row = [c for c in header if c not in ("dataset", "experiment") and not c.startswith("diff_")
               and not c.endswith("_std")]  # fmt: skip
    return len(rows(REFERENCE / "table.csv")) * len(per_row)


def test_the_reference_is_a_whole_demo_report():
    table = rows(REFERENCE / "table.csv")
    # the untouched backbone, 14 experiments (the paper's 10, vpt_deep, ssf, lpft, l2sp) and the chosen alpha of the
    # 12 interpolated (vpt_deep has no WiSE view)
    assert [row["experiment"] for row in table][:2] == ["pretrained", "full"] and len(table) == 1 + 14 + 12
    assert json.loads((REFERENCE / "provenance.json").read_text())["name"] == "demo"
    assert (REFERENCE / "table.md").read_text().startswith("| Family")


def test_an_identical_table_matches_the_reference_exactly(demo, capsys):
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    assert out == f"{TABLE} matches the reference {REF} exactly ({cells()} cells).\n"


def test_one_changed_cell_is_named_with_both_values_the_difference_and_the_reasons(demo, capsys):
    for where in ("results", "reference"):  # reports made before vitpeft recorded the kernels
        path, record = provenance(where)
        record.pop("kernels", None)
        path.write_text(json.dumps(record))
    table = rows(TABLE)
    full = next(row for row in table if row["experiment"] == "full")
    reference_value = full["target_acc"]
    full["target_acc"] = f"{float(reference_value) - 1.25:.4f}"
    write_rows(TABLE, table)

    code, out, err = run(capsys)
    assert (code, err) == (0, "")  # a mismatch is a finding, not an error
    lines = out.splitlines()
    std = f" ± {full['target_acc_std']}" if full["target_acc_std"] else ""
    assert lines[:3] == [
        f"{TABLE} differs from the reference {REF} in 1 of {cells()} cells:",
        f"  full, target_acc: yours {full['target_acc']}{std}, reference {reference_value}{std}, difference -1.2500",
        "Likely reasons:",
    ]
    reasons = lines[3:]
    assert reasons and all(line.startswith("  - ") for line in reasons)
    for generic in compare.GENERIC_REASONS:  # the records say nothing specific: the usual suspects
        assert f"  - {generic}" in reasons


def test_a_changed_std_alone_differs_without_a_difference_of_means(demo, capsys):
    table = rows(TABLE)
    row = next(row for row in table if row["experiment"] == "lora_r4")
    before = row["source_acc_std"]
    row["source_acc_std"] = f"{float(before or 0) + 0.5:.4f}"
    write_rows(TABLE, table)
    _, out, _ = run(capsys)
    cell = out.splitlines()[1]
    assert cell.startswith("  lora_r4, source_acc: yours ") and f"± {row['source_acc_std']}, reference " in cell
    assert cell.endswith("difference +0.0000")


def test_a_row_missing_from_your_table_is_named(demo, capsys):
    write_rows(TABLE, [row for row in rows(TABLE) if row["experiment"] != "block_p4"])
    code, out, _ = run(capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [f"{TABLE} differs from the reference {REF}:", "  row block_p4: only in the reference"]


def test_a_reference_from_another_config_is_named_as_such(demo, capsys):
    table = rows(TABLE)
    table[0]["source_acc"] = f"{float(table[0]['source_acc']) + 1:.4f}"
    write_rows(TABLE, table)
    _, theirs = provenance("reference")
    edit_provenance("results", config={"path": "config/mine.yaml", "sha256": "ab" * 32}, report_key="0123456789ab")
    _, out, _ = run(capsys)
    reasons = out.split("Likely reasons:\n", 1)[1].splitlines()
    assert reasons[0] == (
        "  - the reference is from another config: yours is config/mine.yaml (sha256 abababababab, report key "
        f"0123456789ab), the reference's {theirs['config']['path']} (sha256 {theirs['config']['sha256'][:12]}, "
        f"report key {theirs['report_key']}); only a reference made from the same config can match"
    )


def change_one_cell() -> None:
    table = rows(TABLE)
    table[1]["mean"] = "0.0000"
    write_rows(TABLE, table)


def reasons_given(capsys) -> list:
    _, out, _ = run(capsys)
    return out.split("Likely reasons:\n", 1)[1].splitlines()


def test_the_kernel_records_name_an_unpinned_run_another_torch_and_other_threads(demo, capsys):
    change_one_cell()
    why = "ATen ran its DEFAULT kernels, not AVX2: this CPU has no AVX2"
    unpinned = {**CPU, "aten_capability": "DEFAULT", "mkldnn": True, "threads": 2, "torch": "2.13.0+cpu",
                "reference_bits": False, "why_not": why}  # fmt: skip
    edit_provenance("results", kernels=[unpinned], code=[CODE])
    edit_provenance("reference", kernels=[CPU], code=[CODE])
    assert reasons_given(capsys) == [
        f"  - your runs did not run the pinned kernels: {why}",
        "  - ATen's capability differs: yours DEFAULT, the reference's AVX2",
        "  - the torch version differs: yours 2.13.0+cpu, the reference's 2.14.1+cu130",
        "  - the intra-op thread count differs: yours 2, the reference's 1",
        "  - whether oneDNN (mkldnn) is on differs: yours True, the reference's False",
    ]


def test_mkl_running_its_auto_branch_on_an_amd_cpu_is_the_reason_given(demo, capsys):
    """What the AVX2 pin did on an AMD EPYC (issue 29): every record claimed the reference's bits. Now the record
    holds what MKL reported, and compare names it."""
    change_one_cell()
    why = ("MKL ran its AUTO branch, not COMPATIBLE: this is a non-Intel AuthenticAMD CPU (AMD EPYC 7B13 64-Core "
           "Processor), where MKL runs only AUTO and COMPATIBLE and fell back to AUTO")
    amd = {**CPU, "mkl_branch": "AUTO", "mkl_auto_branch": "AVX2", "cpu": AMD, "reference_bits": False, "why_not": why}
    edit_provenance("results", kernels=[amd], code=[CODE])
    edit_provenance("reference", kernels=[CPU], code=[CODE])
    assert reasons_given(capsys) == [
        f"  - your runs did not run the pinned kernels: {why}",
        "  - MKL's CNR branch (as MKL reports it) differs: yours AUTO, the reference's COMPATIBLE",
    ]


def test_kernel_records_that_agree_point_outside_the_pin_and_name_the_cpus(demo, capsys):
    change_one_cell()
    edit_provenance("results", kernels=[{**CPU, "cpu": AMD, "mkl_auto_branch": "AVX2"}], code=[CODE])
    edit_provenance("reference", kernels=[CPU], code=[CODE])
    reasons = reasons_given(capsys)
    assert len(reasons) == 1 and "outside the pin" in reasons[0]
    assert reasons[0].endswith(f"; the CPUs differ: yours AuthenticAMD {AMD['model']}, the reference's GenuineIntel "
                               f"{INTEL['model']}")


def test_a_reference_from_other_code_is_named_as_such(demo, capsys):
    change_one_cell()
    mine = {**CODE, "commit": "b" * 40, "modified": True}
    edit_provenance("results", kernels=[CPU], code=[mine])
    edit_provenance("reference", kernels=[CPU], code=[CODE])
    assert reasons_given(capsys) == [
        "  - the reference is from other code: yours ran vitpeft 0.1.0 at commit bbbbbbbbbbbb (modified), the "
        "reference vitpeft 0.1.0 at commit aaaaaaaaaaaa; a change between them can move the figures"
    ]


def test_a_table_without_its_report_provenance_says_what_made_it_is_unknown(demo, capsys):
    path, _ = provenance("results")
    path.unlink()
    table = rows(TABLE)
    table[1]["mean"] = "0.0000"
    write_rows(TABLE, table)
    _, out, _ = run(capsys)
    reasons = out.split("Likely reasons:\n", 1)[1].splitlines()
    assert reasons[0].startswith("  - your report has no provenance (results/demo/provenance/report-<key>.json)")


@pytest.mark.parametrize("remove, said", [
    ("reference/demo", "the reference folder reference/demo does not exist; the repository has reference/demo "
                       "(`make demo-reference` writes it from a finished demo)"),
    ("reference/demo/provenance.json", "the reference reference/demo has no provenance.json; `make demo-reference` "
                                       "writes it"),
    ("reference/demo/table.csv", "the reference's table reference/demo/table.csv does not exist"),
    (TABLE, f"your table {TABLE} does not exist"),
])  # fmt: skip
def test_a_missing_reference_or_table_is_one_line_and_exit_2(demo, capsys, remove, said):
    shutil.rmtree(remove) if (demo / remove).is_dir() else (demo / remove).unlink()
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert err == f"vitpeft compare: error: {said}\n"


def test_a_table_that_is_not_a_reports_is_one_line_and_exit_2(demo, capsys):
    (demo / TABLE).write_text("name,value\nx,1\n")
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert err == f"vitpeft compare: error: your table {TABLE} is not a report's table.csv: no 'dataset' and no " \
                  "'experiment' column\n"
