"""The stages' import contracts (pyproject.toml [tool.importlinter]) hold, and they bite.

`make test` runs lint-imports before pytest; this runs it too, so a bare
`pytest` also fails naming the import that breaks a layer or brings torch
into planning.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(cwd=REPO, env=None):
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_stages_keep_their_import_contracts():
    done = lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout  # layers, planning without torch, planning one way, shared modules


def test_the_planning_contract_names_a_torch_import_in_study(tmp_path):
    """Even a late import inside a function counts: lint-imports fails and names the chain."""
    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    paths = tmp_path / "src" / "vitpeft" / "study" / "paths.py"
    paths.write_text(paths.read_text() + "\n\ndef _late():\n    import torch  # noqa: F401\n")
    done = lint_imports(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path / "src")})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "vitpeft.study is not allowed to import torch" in done.stdout
    assert "vitpeft.study.paths -> torch" in done.stdout
