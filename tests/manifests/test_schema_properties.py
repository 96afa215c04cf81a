"""Hypothesis properties of ravend.sim.schema over the Gateway CRD's schemas and random input."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ravend.sim.schema import ROOT_FIELDS, admit, apply_defaults, prune, unknown_fields, validate

Schema = Mapping[str, Any]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)

keywords = st.sampled_from([
    "type", "properties", "required", "items", "additionalProperties", "enum", "minimum",
    "maximum", "exclusiveMinimum", "minLength", "maxLength", "pattern", "format", "minItems",
    "maxItems", "nullable", "default", "multipleOf", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields", "minProperties", "maxProperties",
])  # fmt: skip
garbage_schemas = st.recursive(
    st.dictionaries(keywords, json_values, max_size=4),
    lambda inner: st.dictionaries(keywords, inner | json_values, max_size=4),
    max_leaves=10,
)
"""Schemas with any keyword holding any JSON value: a broken CRD must not crash the server."""

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data(), version=st.sampled_from(["v1beta1", "v1alpha1"]), spec=json_values)
def test_never_raises_on_arbitrary_json(
    schemas: dict[str, Schema], data: st.DataObject, version: str, spec: object
) -> None:
    schema = schemas[version]
    obj = {"spec": spec, "status": data.draw(json_values), "extra": data.draw(json_values)}
    causes = validate(schema, obj)
    assert all(c.reason.startswith("FieldValue") and c.message for c in causes)
    pruned = prune(schema, obj)
    unknown_fields(schema, obj)
    defaulted = apply_defaults(schema, pruned)
    assert prune(schema, pruned) == pruned, "pruning twice changes nothing"
    assert apply_defaults(schema, defaulted) == defaulted, "defaulting twice changes nothing"


@SETTINGS
@given(schema=garbage_schemas, obj=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_never_raises_on_garbage_schemas(schema: dict[str, Any], obj: dict[str, Any]) -> None:
    validate(schema, obj)
    admit(schema, obj)
    unknown_fields(schema, obj)


def instances(schema: Schema) -> st.SearchStrategy[Any]:
    """Values valid under a structural schema (the subset the Gateway CRD uses)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=6)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return _arrays(schema)
    assert kind == "object", schema
    if isinstance(schema.get("additionalProperties"), Mapping):
        return st.dictionaries(
            st.text(max_size=6), instances(schema["additionalProperties"]), max_size=3
        )
    props: Mapping[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: instances(s) for k, s in props.items() if k in required},
        optional={k: instances(s) for k, s in props.items() if k not in required},
    )


def _arrays(schema: Schema) -> st.SearchStrategy[list[Any]]:
    unique_by: Callable[[Any], str] | None = None
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        unique_by = lambda item: json.dumps([item.get(k) for k in keys])  # noqa: E731
    elif schema.get("x-kubernetes-list-type") == "set":
        unique_by = json.dumps
    return st.lists(instances(schema["items"]), max_size=3, unique_by=unique_by)


def with_unknown_fields(
    draw: st.DrawFn, schema: Schema, value: Any, path: str, added: list[str]
) -> Any:
    """`value` with unknown keys added under closed objects; their paths go into `added`."""
    if isinstance(value, list):
        items = schema.get("items", {})
        return [
            with_unknown_fields(draw, items, v, f"{path}[{i}]", added) for i, v in enumerate(value)
        ]
    if not isinstance(value, dict) or "additionalProperties" in schema:
        return value
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not path and k in ROOT_FIELDS:
            out[k] = v  # kube keeps apiVersion/kind/metadata whatever the schema says
        else:
            out[k] = with_unknown_fields(draw, props[k], v, f"{path}.{k}" if path else k, added)
    for name in draw(st.lists(st.text(min_size=1, max_size=5), max_size=2, unique=True)):
        key = f"zz-unknown-{name}"
        out[key] = draw(json_values)
        added.append(f"{path}.{key}" if path else key)
    return out


@st.composite
def dirtied(draw: st.DrawFn, schema: Schema, valid: dict[str, Any]) -> tuple[Any, list[str]]:
    """`valid` with unknown fields added, and their paths (root metadata is kept by kube)."""
    added: list[str] = []
    dirty = with_unknown_fields(draw, schema, valid, "", added)
    return dirty, added


@SETTINGS
@given(data=st.data(), version=st.sampled_from(["v1beta1", "v1alpha1"]))
def test_prune_removes_exactly_the_unknown_fields(
    schemas: dict[str, Schema], data: st.DataObject, version: str
) -> None:
    schema = schemas[version]
    valid = data.draw(instances(schema))
    assert validate(schema, valid) == []
    dirty, added = data.draw(dirtied(schema, valid))
    assert validate(schema, dirty) == [], "unknown fields are pruned, never rejected"
    assert sorted(unknown_fields(schema, dirty)) == sorted(added)
    assert prune(schema, dirty) == valid
    assert admit(schema, dirty) == (apply_defaults(schema, valid), [])
