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
workflow tests finish (its config added). docs/adding-a-method.md's example
is applied to a copy of the package and its commands run the same way.
"""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

import slurmctl
from slurmctl import REPO
from vitpeft.cli import build_parser
from vitpeft.report import compare

DOCUMENTS = ["README.md", "config/README.md", "Snakefile", "slurm/config.yaml"]
READ_ONLY = {"params", "check", "list-targets", "list-backbones", "compare", "check-bits"}  # vitpeft commands that change nothing
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
            command = re.sub(r"^vitpeft warm (?=snakemake )", "", command)  # the command it runs is checked
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


def test_the_readme_lists_every_vitpeft_subcommand():
    package = (REPO / "README.md").read_text().split("## The package", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in SUBCOMMANDS if not re.search(rf"`(vitpeft )?{re.escape(name)}[` ]", package)]
    assert not missing, f"README.md's command table lacks {missing}"


@pytest.mark.parametrize("block, reference, head", [
    ("demo-table", lambda: compare.markdown_table(REPO / "reference" / "demo"), "| Family"),
    ("continual-table", lambda: compare.first_table(REPO / "reference" / "demo-continual" / "summary.md"),
     "| experiment | variant | ACC"),
])  # fmt: skip
def test_the_readme_demo_tables_are_the_reference_files(block, reference, head):
    """The block between each pair of markers is its reference's table (scripts/readme-table.py writes them)."""
    blocks = re.findall(rf"<!-- {block}:begin[^>]*-->\n(.*?)<!-- {block}:end -->", (REPO / "README.md").read_text(),
                        re.S)
    assert len(blocks) == 1, f"README.md should hold one {block} block, found {len(blocks)}"
    table = reference()
    assert table.startswith(head) and table.count("\n") >= 3  # a table, not an empty file
    assert blocks[0] == table, f"README.md's {block} is stale: run python scripts/readme-table.py"


def test_a_yaml_error_is_named_with_its_file_and_line_by_planning_and_by_check(project):
    """Snakemake reads --configfile before the workflow; after make setup (vitpeft.snakemake_yaml) its error
    names the file, line and column, as `vitpeft check --config` does, and as the README says."""
    (project / "config" / "broken.yaml").write_text("name: broken\ntrain: [unclosed\nseeds: [0]\n")
    planned = in_shell(project, "snakemake -n all --configfile config/broken.yaml")
    said = ("Config file config/broken.yaml is not valid YAML: line 3, column 6: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence at line 2, column 8)")
    assert planned.returncode != 0 and said in planned.stdout, planned.stdout
    assert "snakemake_yaml.py" not in planned.stdout  # Snakemake's own error, in its words: no frame of ours
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`Config file config/mine.yaml is not valid YAML: line 3, column 6: ...`" in readme
    checked = in_shell(project, "vitpeft check --config config/broken.yaml")
    assert "config/broken.yaml: not valid YAML: line 3, column 6:" in checked.stdout, checked.stdout


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


# ---------------------------------------------------------------- docs/adding-a-method.md, applied

GUIDE = REPO / "docs" / "adding-a-method.md"


def guide_blocks() -> dict:
    """{the comment on its first line: the rest} of each code block of the guide that names its file."""
    blocks = {}
    for body in re.findall(r"```\w*\n(.*?)```", GUIDE.read_text(), re.S):
        first, _, rest = body.partition("\n")
        if first.startswith("# "):
            blocks[first[2:].split(":")[0]] = rest
    return blocks


def apply_guide(src: Path) -> None:
    """The guide's steps 1-3 on a copy of the package, done as the guide says."""
    blocks = guide_blocks()
    with open(src / "vitpeft" / "methods" / "arguments.py", "a") as handle:
        handle.write("\n\n" + blocks["src/vitpeft/methods/arguments.py (at the end)"])
    (src / "vitpeft" / "methods" / "attn_tune.py").write_text(blocks["src/vitpeft/methods/attn_tune.py (new file)"])
    schema = src / "vitpeft" / "study" / "config.schema.yaml"
    enum = blocks["src/vitpeft/study/config.schema.yaml (the method enum)"]
    text = schema.read_text()
    assert text.count(enum.replace(", attn_tune]", "]")) == 1, "the guide's enum line is not the schema's plus attn_tune"
    schema.write_text(text.replace(enum.replace(", attn_tune]", "]"), enum))


@pytest.mark.workflow
def test_the_method_guide_adds_a_method_that_counts_and_plans(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    apply_guide(src)
    project = slurmctl.make_project(tmp_path / "project")
    mine = yaml.safe_load(guide_blocks()["config/mine.yaml"])
    cfg = yaml.safe_load((project / "config" / "demo.yaml").read_text())
    cfg["name"], cfg["experiments"] = mine["name"], cfg["experiments"] + mine["experiments"]
    (project / "config" / "mine.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    text = GUIDE.read_text()
    commands = [line.split("  #")[0].strip() for line in text.splitlines() if COMMAND.match(line)]
    assert len(commands) == 3, commands
    params = in_shell(project, commands[0], PYTHONPATH=src)
    assert params.returncode == 0, params.stdout
    shown = next(block for block in re.findall(r"```\w*\n(.*?)```", text, re.S) if block.startswith("full "))
    printed = [line.split() for line in params.stdout.splitlines()]
    for line in shown.splitlines():  # attn_tune's row and the others shown for scale
        assert line.split() in printed, f"the guide shows {line!r}; vitpeft params printed:\n{params.stdout}"
    for command in commands[1:]:
        plan = in_shell(project, f"{command} -n", PYTHONPATH=src)
        assert plan.returncode == 0, plan.stdout
        jobs = slurmctl.parse_dry_run(plan.stdout)
        assert {rule for rule, exp in jobs if exp == "exp=attn_tune"} == {"train", "eval_target", "eval_source",
                                                                          "eval_curve", "eval_interpolation",
                                                                          "eval_wise"}
        assert jobs[("train", "exp=attn_tune")] == len(cfg["seeds"])
    cfg["experiments"][-1]["args"] = {"proj": "always"}  # the mistake the guide shows, and its message
    (project / "config" / "mine.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    refused = in_shell(project, f"{commands[1]} -n", PYTHONPATH=src)
    message = re.search(r"`(invalid config: .*?)`", " ".join(text.split()), re.S).group(1)
    assert refused.returncode != 0 and message in refused.stdout, refused.stdout
