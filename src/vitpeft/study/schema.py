"""The one schema (config.schema.yaml) and how it is applied: defaults filled, first error named by its key.

Both the workflow config and a training spec are checked here, so a key, its
type, its range and its default are written once, in the YAML file.
"""

import copy
import functools
import math
import re
from importlib import resources

import jsonschema
import yaml

from vitpeft.errors import VitpeftError


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster on big grids


def read_yaml(text: str):
    """Parse YAML safely (no tags that build objects)."""
    return yaml.load(text, Loader=_LOADER)


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(resources.files("vitpeft.study").joinpath("config.schema.yaml").read_text())


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # $defs/safe_name's pattern (a test keeps them equal)


def schema() -> dict:
    """The whole schema (a copy: callers may not change the cached one)."""
    return copy.deepcopy(_schema())


def _with_defaults(validator_class):
    """A validator that fills each missing property's `default` before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, sub):
        if validator.is_type(instance, "object"):
            for key, rules in properties.items():
                if key not in instance and "default" in rules:
                    instance[key] = copy.deepcopy(rules["default"])
        yield from check_properties(validator, properties, instance, sub)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def apply(instance, where: str, definition: str | None = None, prefix: str = ""):
    """Fill defaults into `instance` in place and check it against the schema (or one of its `$defs`).

    The first problem becomes one VitpeftError: "<where>: <key>: <what is wrong>".
    """
    _refuse_non_finite(instance, where, prefix)
    _raise_first(_Validator(_target(definition)).iter_errors(instance), where, prefix, instance)
    return instance


def check(instance, where: str, definition: str, prefix: str = "") -> None:
    """Check `instance` against one of the `$defs` without filling defaults (cheap for a few keys)."""
    _refuse_non_finite(instance, where, prefix)
    _raise_first(jsonschema.Draft202012Validator(_target(definition)).iter_errors(instance), where, prefix, instance)


def _refuse_non_finite(instance, where: str, prefix: str) -> None:
    """YAML's .nan and .inf are numbers to JSON Schema: refuse them wherever they are, naming the key."""
    found = _first_non_finite(instance)
    if found is not None:
        parts, value = found
        raise VitpeftError(f"{where}: {key_path(parts, prefix, instance)}: {value!r} is not a finite number")


def _first_non_finite(node, parts=()):
    """(key path, value) of the first NaN or infinity in a parsed YAML tree; None when every number is finite."""
    if isinstance(node, float):
        return None if math.isfinite(node) else (parts, node)
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _first_non_finite(value, (*parts, key))
        if found is not None:
            return found
    return None


def _target(definition: str | None) -> dict:
    whole = _schema()
    return whole if definition is None else {"$defs": whole["$defs"], "$ref": f"#/$defs/{definition}"}


def _raise_first(errors, where: str, prefix: str, root) -> None:
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        raise VitpeftError(f"{where}: {describe(error, prefix, root)}")


def key_path(parts, prefix: str = "", root=None) -> str:
    """experiments, 3, method -> 'experiments[3].method'; with the config (`root`) at hand, an experiment
    with a usable name is named by it: "experiment 'lora_r4': method" (its place in the list says little)."""
    parts = list(parts)
    if not prefix and len(parts) > 1 and parts[0] == "experiments" and isinstance(parts[1], int):
        name = experiment_name(root, parts[1])
        if name is not None:
            rest = key_path(parts[2:])
            return f"experiment {name!r}" + (f": {rest}" if rest else "")
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def experiment_name(cfg, index: int) -> str | None:
    """The name of experiment `index` of a (raw) config when it is a safe name; None otherwise."""
    experiments = cfg.get("experiments") if isinstance(cfg, dict) else None
    if not isinstance(experiments, list) or index >= len(experiments) or not isinstance(experiments[index], dict):
        return None
    name = experiments[index].get("name")
    return name if isinstance(name, str) and SAFE_NAME.fullmatch(name) else None


def describe(error, prefix: str = "", root=None) -> str:
    parts = list(error.absolute_path)
    path = key_path(parts, prefix, root)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_allowed_keys(error.schema))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"{key_path([*parts, unknown[0]], prefix, root)}: unknown key (allowed here: {', '.join(allowed)})"
    safe_name = _schema()["$defs"]["safe_name"]
    if error.validator == "pattern" and error.schema.get("pattern") == safe_name["pattern"]:
        return f"{path}: {error.instance!r} is not a safe name ({safe_name['description']})"
    return f"{path or 'top level'}: {error.message}"


def _allowed_keys(sub: dict) -> set:
    """Keys a (possibly $ref-composed) object schema defines."""
    keys = set(sub.get("properties", {}))
    if "$ref" in sub:
        keys |= _allowed_keys(_resolve(sub["$ref"]))
    return keys


def _resolve(ref: str) -> dict:
    node = _schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


# ---------------------------------------------------------------- documentation


def key_rows(node: dict | None = None, path: str = "") -> list:
    """(key, type, default, meaning) for every key of the config, depth first, from the schema itself."""
    node = _schema() if node is None else node
    rows = []
    for key, rule in node.get("properties", {}).items():
        name = f"{path}.{key}" if path else key
        body = _followed(rule)
        rows.append((name, _type_text(body), _default_text(rule, body), " ".join(rule["description"].split())))
        if "properties" in body:
            rows += key_rows(body, name)
        elif isinstance(body.get("additionalProperties"), dict):  # a mapping of names to sections
            rows += key_rows(_followed(body["additionalProperties"]), f"{name}.<name>")
    return rows


def _followed(rule: dict) -> dict:
    """A rule with its `$ref` chain resolved (own keys win), so composed sections read as one."""
    while "$ref" in rule:
        target = _resolve(rule["$ref"])
        merged = {**target, **{key: value for key, value in rule.items() if key != "$ref"}}
        if "properties" in rule and "properties" in target:
            merged["properties"] = {**target["properties"], **rule["properties"]}
        rule = merged
    return rule


def _type_text(rule: dict) -> str:
    if "enum" in rule:
        return " \\| ".join(str(value) for value in rule["enum"])
    kinds = rule.get("type", "")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "properties" in rule and kinds == ["object"]:
        return "section"
    if rule.get("minItems") == rule.get("maxItems") == 3 and kinds == ["array"]:
        return "3 numbers"
    return " or ".join(kinds)


def _default_text(rule: dict, body: dict) -> str:
    if "default" not in rule or "properties" in body:
        return ""
    return f"`{json_text(rule['default'])}`"


def json_text(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def key_table() -> str:
    """The Markdown table of every key (config/README.md holds it; a test keeps the two equal)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {default} | {meaning} |" for key, kind, default, meaning in key_rows()]
    experiment = _schema()["$defs"]["experiment"]
    lines += ["", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in key_rows(experiment, "experiments[]"):
        required = "required" if key.split(".")[-1] in experiment.get("required", []) else default
        lines.append(f"| `{key}` | {kind} | {required} | {meaning} |")
    return "\n".join(lines) + "\n"
