"""The conda environment (for `snakemake --sdm conda`) installs what requirements.lock pins."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _lock() -> dict:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.split("#")[0].split(";")[0].strip().partition("==")
        if sep:
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_conda_env_pins_every_runtime_dependency_as_the_lock_does():
    """envs/vitpeft.yaml (for --sdm conda) must install what the lock pins, transitive dependencies included."""
    from importlib import metadata

    from packaging.requirements import Requirement

    env = yaml.safe_load((REPO / "envs" / "vitpeft.yaml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    pinned = {canonical(name): version for name, _, version in (line.partition("==") for line in pip)}
    lock = _lock()
    assert {name: lock.get(name) for name in pinned} == pinned  # every pin is the lock's
    needed, todo = set(), ["vitpeft"]
    while todo:  # vitpeft's runtime closure as installed from the lock
        for text in metadata.distribution(todo.pop()).requires or []:
            requirement = Requirement(text)
            name = canonical(requirement.name)
            if (requirement.marker is None or requirement.marker.evaluate({"extra": ""})) and name not in needed:
                if name in lock:
                    needed.add(name)
                    todo.append(requirement.name)
    assert needed <= set(pinned), f"missing from envs/vitpeft.yaml: {sorted(needed - set(pinned))}"
