"""The hook that makes Snakemake name a config's YAML error: the place, in Snakemake's own error; silent elsewhere.

tests/test_docs.py plans a broken config with the real `snakemake -n`; these check the two edges around it.
"""

import subprocess
import sys

import pytest
from snakemake_interface_common.exceptions import WorkflowError

from vitpeft import snakemake_yaml


def test_snakemakes_reader_keeps_its_error_and_gains_the_place(tmp_path):
    from snakemake.common import configfile

    snakemake_yaml.install()  # already imported here: wrapped at once (and once)
    snakemake_yaml.install()
    assert getattr(configfile._load_configfile, "names_the_place", False)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nseeds: [0\n")
    with pytest.raises(WorkflowError) as error:
        configfile.load_configfile(str(broken))
    assert str(error.value) == (f"Config file {broken} is not valid YAML: line 3, column 1: expected ',' or ']', but "
                                f"got '<stream end>' (while parsing a flow sequence at line 2, column 8) "
                                f"(`vitpeft check --config {broken}` checks the whole config)")
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")
    assert configfile.load_configfile(str(good)) == {"name": "x"}
    with pytest.raises(FileNotFoundError):  # any other error as Snakemake raises it
        configfile.load_configfile(str(tmp_path / "missing.yaml"))


def test_the_hook_line_is_silent_where_this_vitpeft_is_not_the_one_imported(tmp_path):
    """Another vitpeft on PYTHONPATH (an older checkout): every Python process starts without a word."""
    (tmp_path / "vitpeft").mkdir()
    (tmp_path / "vitpeft" / "__init__.py").write_text("")
    done = subprocess.run([sys.executable, "-c", snakemake_yaml.HOOK_LINE + "print('ok')"], capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
