"""Every command the docs show runs as written, so the docs cannot drift from the code.

Commands are read from README.md, config/README.md, the Snakefile's header and
slurm/config.yaml: lines of code blocks and comments, and `inline code`, that
start with `snakemake` or `vitpeft`. They run in a fresh shell that has only
what the README tells a user to do (its `source .venv/bin/activate`), not the
test's own environment. A `snakemake` command runs as written plus `-n` (a
dry run: it plans the real work, checks every argument and writes nothing) in
a copy of the project. A `vitpeft` command that only reads runs as written;
one that would do real work (train, download, prepare...) is checked against
the CLI: its subcommand exists and takes every flag it shows. A `snakemake
--report` command needs a finished study: it runs on the demo-scale study the
workflow tests finish (its config added).
"""

import re
import shlex

import pytest

import slurmctl
from slurmctl import REPO
from vitpeft.cli import build_parser

DOCUMENTS = ["README.md", "config/README.md", "Snakefile", "slurm/config.yaml"]
READ_ONLY = {"params", "check", "list-targets", "list-backbones"}  # vitpeft commands that change nothing
COMMAND = re.compile(r"^(snakemake|vitpeft)\s")
SUBCOMMANDS = build_parser()._subparsers._group_actions[0].choices  # argparse keeps the subparsers here


def documented_commands() -> list:
    """(document, command) for every documented snakemake/vitpeft command, as written."""
    found = []
    for name in DOCUMENTS:
        text = (REPO / name).read_text()
        candidates = re.findall(r"`([^`\n]+)`", text)  # inline code
        candidates += [line.strip().lstrip("#$ ").strip() for line in text.splitlines()]  # blocks and comments
        for candidate in candidates:
            command = re.split(r"\s{2,}|\s#\s", candidate)[0].strip()  # what follows is a comment or a gloss
            if COMMAND.match(command) and is_command(command) and (name, command) not in found:
                found.append((name, command))
    return found


def is_command(text: str) -> bool:
    """`vitpeft <subcommand> ...` or `snakemake ...`, not prose that starts with the word."""
    words = text.split()
    return words[0] == "snakemake" or (len(words) > 1 and words[1] in SUBCOMMANDS)


COMMANDS = documented_commands()
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a new login shell's, on Debian


def shell_setup() -> str:
    """The README's one line that readies a shell for its commands (code-block lines starting with `source`)."""
    text = (REPO / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```\w*\n(.*?)```", text, re.S))
    found = [line.strip() for line in blocks.splitlines() if line.strip().startswith("source ")]
    assert len(found) == 1, f"README.md should say once how to put .venv/bin on the PATH, found {found}"
    return found[0]


def in_shell(project, command: str, timeout: int = 300, setup: bool = True, **env_extra):
    """`command` in a fresh bash: the system's PATH and, with `setup`, only what the README says to do first."""
    (project / ".venv").is_symlink() or (project / ".venv").symlink_to(slurmctl.BIN.parent)  # what make setup made
    line = f"{shell_setup()} && {command}" if setup else command
    return slurmctl.run(["bash", "-c", line], cwd=project, timeout=timeout, check=False, PATH=FRESH_PATH,
                        VIRTUAL_ENV="", **env_extra)


def test_the_docs_show_the_commands_users_need():
    shown = {command for _, command in COMMANDS}
    for needed in ("snakemake --profile slurm all", "snakemake all --cores 2 --configfile config/demo.yaml",
                   "vitpeft check --config config/config.yaml"):
        assert needed in shown, needed
    for command in shown:  # --configfile takes every following word: a target after it is read as a config file
        words = shlex.split(command)
        if "--configfile" in words:
            following = words[words.index("--configfile") + 1:]
            files = following[: next((i for i, w in enumerate(following) if w.startswith("-")), len(following))]
            assert len(files) == 1 and files[0].endswith(".yaml"), f"`{command}`: {files} after --configfile"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return slurmctl.make_project(tmp_path_factory.mktemp("docs") / "project")


def test_the_readme_puts_the_tools_on_the_path_before_its_first_command(project):
    text = (REPO / "README.md").read_text()
    first = min(text.index(command) for where, command in COMMANDS if where == "README.md")
    assert text.index(shell_setup()) < first, "the README's commands come before it says how to run them"
    bare = in_shell(project, "command -v snakemake vitpeft dvc", setup=False)
    assert bare.returncode != 0, f"a fresh shell has the tools already, the test cannot tell:\n{bare.stdout}"
    ready = in_shell(project, "command -v snakemake vitpeft dvc")
    assert ready.returncode == 0, ready.stdout
    assert ready.stdout.split() == [str(slurmctl.BIN / name) for name in ("snakemake", "vitpeft", "dvc")]


def subcommand_options(name: str) -> set:
    sub = SUBCOMMANDS.get(name)
    assert sub is not None, f"vitpeft has no subcommand {name!r}"
    return {option for action in sub._actions for option in action.option_strings}


@pytest.mark.workflow
@pytest.mark.parametrize("where, command", [c for c in COMMANDS if c[1].startswith("snakemake") and "--report" not in c[1]],
                         ids=lambda value: value if " " in str(value) else None)
def test_each_documented_snakemake_command_plans_without_error(project, where, command):
    in_shell(project, "true")  # the .venv link, before the snapshot
    before = {p: p.stat().st_mtime_ns for p in project.rglob("*")}
    result = in_shell(project, f"{command} -n")
    assert result.returncode == 0, f"{where}: `{command}` failed:\n{slurmctl.tail(result.stdout)}"
    assert {p: p.stat().st_mtime_ns for p in project.rglob("*") if ".snakemake" not in p.parts} == {
        p: t for p, t in before.items() if ".snakemake" not in p.parts}, f"{where}: `{command} -n` wrote files"


@pytest.mark.parametrize("where, command", [c for c in COMMANDS if c[1].startswith("vitpeft")],
                         ids=lambda value: value if " " in str(value) else None)
def test_each_documented_vitpeft_command_exists_with_its_flags_and_read_only_ones_run(project, where, command):
    words = [word for word in shlex.split(command) if word != "..."]
    name = words[1]
    options = subcommand_options(name)
    for word in words[2:]:
        flag = word.split("=")[0]
        if flag.startswith("--"):
            assert flag in options, f"{where}: `{command}`: vitpeft {name} has no {flag}"
    if name in READ_ONLY and not any(word.isupper() for word in words):  # concrete, not a synopsis
        result = in_shell(project, command)
        assert result.returncode in (0, 2), result.stdout  # `check` exits 2 for what is missing here
        assert "Traceback" not in result.stdout, f"{where}: `{command}` crashed:\n{result.stdout}"


@pytest.mark.workflow
@pytest.mark.parametrize("where, command", [c for c in COMMANDS if "--report" in c[1]],
                         ids=lambda value: value if " " in str(value) else None)
def test_each_documented_report_command_bundles_a_finished_study(finished, tmp_path, where, command):
    """A report needs a finished study: the demo-scale one, its config given as the only addition."""
    project, config = finished
    words = shlex.split(command)
    words[words.index("--report") + 1] = str(tmp_path / words[words.index("--report") + 1])
    result = in_shell(project, f"{shlex.join(words)} --configfile {config}", timeout=600)
    assert result.returncode == 0, f"{where}: `{command}` failed:\n{slurmctl.tail(result.stdout)}"
    assert (tmp_path / "report.html").stat().st_size > 0

