"""Generate the CustomResourceDefinitions from the pydantic models.

    python -m kubeloop.api.crdgen crds/ [more/dirs/ ...]

pydantic writes JSON Schema 2020-12; the API server wants a structural OpenAPI v3 schema. This module
inlines references, turns optionals into plain (omittable) fields, keeps free-form subtrees explicit, and
writes one <plural>.yaml per kind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from kubeloop.api import GROUP, KINDS, VERSION
from kubeloop.api.common import Kind, KubeloopModel
from kubeloop.api.conditions import describe

# JSON Schema keywords the API server's structural schema accepts (others are dropped: title, examples...).
_KEPT = {
    "type", "format", "description", "default", "enum", "pattern", "minimum", "maximum", "minLength",
    "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "required", "properties",
    "items", "additionalProperties", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
    "exclusiveMinimum", "exclusiveMaximum", "oneOf",
}  # fmt: skip


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Turn one resolved pydantic schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if {v.get("type") for v in variants} == {"integer", "string"}:
            pattern = next(v.get("pattern") for v in variants if v.get("type") == "string")
            node.update({"x-kubernetes-int-or-string": True, "pattern": pattern})
        elif len(variants) == 1:
            # Optional[X]: an omitted field, never null. The field's own keywords win over X's.
            node = {**variants[0], **node}
        else:
            raise ValueError(f"cannot express a union in a structural schema: {variants}")
    if node.get("default", 0) is None:
        del node["default"]
    if not node.get("type") and not node.get("x-kubernetes-int-or-string"):
        # Any: a free-form value.
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[bound.replace("exclusiveM", "m")] = node[bound]
            node[bound] = True
    if "patternProperties" in node:
        # dict[ConstrainedKey, V]: a structural schema has no patternProperties; the values become
        # additionalProperties and the key constraints a CEL rule over the map's keys.
        node = _keyed_map(node)
    if "properties" in node:
        node["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _structural(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    elif node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas are closed by default
    if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") == "object":
        node.pop("additionalProperties", None)
    return {k: v for k, v in node.items() if k in _KEPT}


def _keyed_map(node: dict[str, Any]) -> dict[str, Any]:
    patterns = node.pop("patternProperties")
    if len(patterns) != 1:
        raise ValueError(f"cannot express several key patterns in a structural schema: {list(patterns)}")
    ((pattern, value),) = patterns.items()
    names = node.pop("propertyNames", {})
    checks = [f"k.matches('{pattern}')"]
    bounds = []
    if "minLength" in names:
        checks.append(f"size(k) >= {names['minLength']}")
        bounds.append(f"at least {names['minLength']}")
    if "maxLength" in names:
        checks.append(f"size(k) <= {names['maxLength']}")
        bounds.append(f"at most {names['maxLength']}")
    message = f"every key must match {pattern}"
    if bounds:
        message += f" and be {' and '.join(bounds)} characters"
    rule = {"rule": f"self.all(k, {' && '.join(checks)})", "message": message}
    node["additionalProperties"] = value
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]
    return node


def openapi_schema(model: type[KubeloopModel]) -> dict[str, Any]:
    """The structural schema of one model, descriptions from the docstrings."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def status_schema(kind: Kind) -> dict[str, Any]:
    """The status schema, its conditions described with the kind's condition types and reasons."""
    schema = {**openapi_schema(kind.status), "description": kind.status.__doc__ or ""}
    conditions = schema["properties"]["conditions"]
    conditions["description"] = conditions.get("description", "") + describe(
        kind.condition_types, kind.reasons
    )
    return schema


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": {**openapi_schema(kind.spec), "description": kind.spec.__doc__ or ""},
            "status": status_schema(kind),
        },
    }
    if kind.root_rules:
        root["x-kubernetes-validations"] = [dict(rule) for rule in kind.root_rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "kubeloop"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["kubeloop"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.column() for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = (
        "# Generated by `python -m kubeloop.api.crdgen` (make generate) from kubeloop.api: do not edit.\n"
    )
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=110)


def rendered() -> dict[str, str]:
    """File name -> content of every CRD."""
    return {f"{kind.plural}.yaml": render(kind) for kind in KINDS}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m kubeloop.api.crdgen DIR [DIR ...]", file=sys.stderr)
        return 2
    for directory in map(Path, argv):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in rendered().items():
            (directory / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
