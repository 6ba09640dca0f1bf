"""Pydantic models -> structural OpenAPI v3 schemas -> CustomResourceDefinitions.

Generic over kinds: a kind is a `ResourceDefinition` (names, spec and status models,
printer columns). Kubernetes-specific schema keys (CEL rules in `x-kubernetes-validations`,
list types) ride on the models through pydantic's `json_schema_extra`, on a model's
`model_config` for object-level rules or on a `Field` for field-level ones, so a rule sits
next to the field it guards and the converter needs no per-kind knowledge.

The apiserver only accepts *structural* schemas: no `$ref`, every node typed, no
`anyOf` with null, `additionalProperties` only for maps. Pydantic's JSON schema is
close; `structural_schema` closes the gap and refuses what it cannot express, so a model
that would yield a broken CRD fails at generation time rather than at `kubectl apply`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

# JSON-schema keys pydantic emits that carry no meaning for the apiserver.
_DROPPED_KEYS = frozenset({"title", "$schema"})
# Keys whose value is one sub-schema, or a mapping of names to sub-schemas.
_SUBSCHEMA_KEYS = frozenset({"items"})
_SUBSCHEMA_MAP_KEYS = frozenset({"properties"})
# Nodes that may legitimately have no `type`.
_UNTYPED_MARKERS = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")
_RULES_KEY = "x-kubernetes-validations"
_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


# The reasons a CEL rule may give (`reason`); the apiserver words the error after it
# (`Required value`, `Forbidden`, `Invalid value`, `Duplicate value`).
REQUIRED = "FieldValueRequired"
FORBIDDEN = "FieldValueForbidden"
INVALID = "FieldValueInvalid"


def cel_rule(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One CEL rule for `x-kubernetes-validations`; `field_path` points the error at a child field.

    The apiserver prefixes the message with the field's path and the reason's wording
    (`spec.path: Invalid value: ...`, `Required value` for REQUIRED), so messages name
    the rule without repeating the path. Without `reason` the apiserver says Invalid value.
    """
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class SchemaError(ValueError):
    """A model cannot be expressed as a structural CRD schema; the message names the path."""


def structural_schema(model: type[BaseModel], *, require_descriptions: bool = True) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model`, using field aliases as property names.

    `$defs` are inlined, titles dropped, `Optional[X]` becomes plain `X` (absence is how
    Kubernetes says "unset"), `default: null` is dropped, and the site of a reference
    (its description, default, rules) wins over the referenced definition.
    With `require_descriptions`, every property must carry a description (for `kubectl explain`).
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    schema = _convert(raw, definitions, path=model.__name__, resolving=())
    if require_descriptions:
        _check_descriptions(schema, model.__name__)
    return schema


def _convert(
    node: Mapping[str, Any], definitions: Mapping[str, Any], path: str, resolving: tuple[str, ...]
) -> dict[str, Any]:
    node = dict(node)

    # A reference (or pydantic's older single-element allOf around one) is replaced by
    # its definition; keys next to it describe this use and override the definition's.
    if len(node.get("allOf", ())) == 1:
        node = {**node.pop("allOf")[0], **node}
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in resolving:
            raise SchemaError(f"{path}: recursive model {name} cannot be inlined into a CRD schema")
        base = _convert(definitions[name], definitions, path, (*resolving, name))
        return _merge(base, _convert_keys(node, definitions, path, resolving))

    # Optional[X] is `anyOf: [X, null]`: keep X, let the outer keys win.
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise SchemaError(f"{path}: unions are not structural; use one type (got {len(branches)})")
        base = _convert(branches[0], definitions, path, resolving)
        return _merge(base, _convert_keys(node, definitions, path, resolving))

    result = _convert_keys(node, definitions, path, resolving)
    if "properties" in result and "additionalProperties" in result:
        raise SchemaError(f"{path}: an object has either properties or additionalProperties, not both")
    if "type" not in result and not any(result.get(marker) for marker in _UNTYPED_MARKERS):
        raise SchemaError(f"{path}: no type (use a concrete type, not Any)")
    return result


def _convert_keys(
    node: Mapping[str, Any], definitions: Mapping[str, Any], path: str, resolving: tuple[str, ...]
) -> dict[str, Any]:
    """Converts the keys of one node, recursing into its sub-schemas."""
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key in ("oneOf", "allOf", "anyOf", "not"):
            raise SchemaError(f"{path}: `{key}` is not supported in a structural schema")
        if key == "const":  # a one-value Literal
            result["enum"] = [value]
        elif key in _EXCLUSIVE_BOUNDS and not isinstance(value, bool):
            # JSON Schema's number (pydantic's gt/lt) is OpenAPI v3.0's bound plus a boolean.
            result[_EXCLUSIVE_BOUNDS[key]] = value
            result[key] = True
        elif key in _SUBSCHEMA_KEYS:
            result[key] = _convert(value, definitions, f"{path}[]", resolving)
        elif key in _SUBSCHEMA_MAP_KEYS:
            result[key] = {
                name: _convert(sub, definitions, f"{path}.{name}", resolving) for name, sub in value.items()
            }
        elif key == "additionalProperties":
            if value is False:  # extra="forbid"; pruning already drops unknown fields
                continue
            if value is True or not isinstance(value, Mapping):
                raise SchemaError(f"{path}: free-form objects need an explicit value type (dict[str, X])")
            result[key] = _convert(value, definitions, f"{path}{{}}", resolving)
        else:
            result[key] = value
    return result


def _merge(definition: dict[str, Any], site: dict[str, Any]) -> dict[str, Any]:
    """The definition overridden by the keys at its point of use; CEL rules of both apply."""
    merged = {**definition, **site}
    rules = [*definition.get(_RULES_KEY, ()), *site.get(_RULES_KEY, ())]
    if rules:
        merged[_RULES_KEY] = rules
    return merged


def _check_descriptions(schema: Mapping[str, Any], path: str) -> None:
    for name, sub in schema.get("properties", {}).items():
        if not sub.get("description"):
            raise SchemaError(f"{path}.{name}: every field needs a description (Field(description=...))")
        _check_descriptions(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            _check_descriptions(schema[key], f"{path}.{key}")


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column; `priority=1` shows it only with `-o wide`."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


def condition_column(name: str, condition_type: str, field: str = "status", **kwargs: Any) -> PrinterColumn:
    """A column showing one field of one condition (e.g. the status of Ready)."""
    return PrinterColumn(name, f'.status.conditions[?(@.type=="{condition_type}")].{field}', **kwargs)


@dataclass(frozen=True)
class ResourceDefinition:
    """Everything needed to generate the CRD of one namespaced, single-version kind."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    short_names: Sequence[str] = ()
    categories: Sequence[str] = ()
    printer_columns: Sequence[PrinterColumn] = ()
    scope: str = "Namespaced"
    labels: Mapping[str, str] = field(default_factory=dict)
    # CEL rules on the whole object: the only place where spec can be checked against status.
    object_rules: Sequence[Mapping[str, str]] = ()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def file_name(self) -> str:
        return f"{self.group}_{self.plural}.yaml"


def build_crd(definition: ResourceDefinition) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of `definition`, as a dict."""
    spec_schema = structural_schema(definition.spec_model)
    status_schema = structural_schema(definition.status_model)
    root_schema: dict[str, Any] = {
        "type": "object",
        "description": definition.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    if definition.object_rules:
        root_schema[_RULES_KEY] = [dict(rule) for rule in definition.object_rules]
    names: dict[str, Any] = {
        "kind": definition.kind,
        "listKind": f"{definition.kind}List",
        "plural": definition.plural,
        "singular": definition.singular,
    }
    if definition.short_names:
        names["shortNames"] = list(definition.short_names)
    if definition.categories:
        names["categories"] = list(definition.categories)
    metadata: dict[str, Any] = {"name": definition.crd_name}
    if definition.labels:
        metadata["labels"] = dict(definition.labels)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": definition.group,
            "names": names,
            "scope": definition.scope,
            "versions": [
                {
                    "name": definition.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_dict() for c in definition.printer_columns],
                    "schema": {"openAPIV3Schema": root_schema},
                }
            ],
        },
    }
