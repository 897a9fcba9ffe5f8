"""Snakemake's reader of config files, made to name the file, line and column of a YAML syntax error.

Snakemake parses every --configfile itself, before any workflow code runs, and
says of a YAML syntax error only "Config file is not valid JSON or YAML",
though the error it caught knows the place (snakemake.common.configfile). The
workflow cannot step in that early, so `make setup` writes a one-line .pth
file into the environment's site-packages (`python -m vitpeft.snakemake_yaml`)
that calls `install()` when Python starts: the first time anything imports
that Snakemake module, its reader is wrapped to add the file and the place, as
`vitpeft check --config` gives them. Nothing else changes; a Snakemake without
that reader is left as it is. tests/test_docs.py plans a broken config with
the real `snakemake -n` and reads the line.
"""

import importlib.abc
import importlib.util
import os
import site
import sys
from pathlib import Path

MODULE = "snakemake.common.configfile"
HOOK_FILE = "vitpeft-snakemake-yaml.pth"
# One line (a .pth runs lines that start with `import`); silent where this vitpeft is not importable (another
# checkout on PYTHONPATH, the package uninstalled), so no Python process of the environment ever complains.
HOOK_LINE = ('import sys; exec("try:\\n from vitpeft.snakemake_yaml import install\\nexcept ImportError:\\n pass\\n'
             'else:\\n install()")\n')


class _Finder(importlib.abc.MetaPathFinder):
    """Finds Snakemake's config-file module the usual way, and wraps its reader once it has run."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _wrap(module)

            spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Wrap Snakemake's config reader when it is first imported (at once if it already is)."""
    if MODULE in sys.modules:
        _wrap(sys.modules[MODULE])
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _wrap(module) -> None:
    read = getattr(module, "_load_configfile", None)
    if read is None or getattr(read, "names_the_place", False):
        return

    def load_configfile(configpath_or_obj, filetype="Config"):
        try:
            return read(configpath_or_obj, filetype)
        except Exception as error:
            marked = _marked_yaml_error(error)
            if marked is None or not isinstance(configpath_or_obj, (str, os.PathLike)):
                raise
            from vitpeft.study.config import yaml_problem

            # Snakemake's own error, re-raised with the place in its words: its report then shows no frame of ours
            error.args = (f"{filetype} file {configpath_or_obj} is not valid YAML: {yaml_problem(marked)} "
                          f"(`vitpeft check --config {configpath_or_obj}` checks the whole config)",)
            raise

    load_configfile.names_the_place = True
    module._load_configfile = load_configfile


def _marked_yaml_error(error):
    """The YAML error with a line and column behind `error` (Snakemake's, and yte's re-raise), or None."""
    seen = error.__context__
    while seen is not None:
        if getattr(seen, "problem_mark", None) is not None:
            return seen
        seen = seen.__context__
    return None


def write_hook() -> Path:
    """The .pth file that installs this in every Python process of this environment (`make setup` runs it)."""
    path = Path(site.getsitepackages()[0]) / HOOK_FILE
    path.write_text(HOOK_LINE)
    return path


if __name__ == "__main__":
    print(f"wrote {write_hook()}")
