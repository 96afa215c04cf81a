"""ravend.sim.schema on small schemas: kube-apiserver's causes, messages, pruning and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from ravend.sim.schema import (
    FieldCause,
    admit,
    apply_defaults,
    load_crd_versions,
    prune,
    unknown_fields,
    validate,
)


def obj_schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def one(schema: dict[str, Any], obj: dict[str, Any]) -> FieldCause:
    causes = validate(schema, obj)
    assert len(causes) == 1, causes
    return causes[0]


@pytest.mark.parametrize(
    ("kind", "value", "got"),
    [
        ("integer", "string", "string"),
        ("integer", 1.5, "number"),
        ("integer", True, "boolean"),
        ("string", 7, "integer"),
        ("boolean", "true", "string"),
        ("object", [], "array"),
        ("array", {}, "object"),
        ("string", None, "null"),
    ],
)
def test_type_errors_read_like_kube(kind: str, value: object, got: str) -> None:
    cause = one(obj_schema(x=obj_schema(y={"type": kind})), {"x": {"y": value}})
    assert cause.reason == "FieldValueTypeInvalid"
    assert cause.field == "x.y"
    assert cause.message == f'Invalid value: "{got}": x.y in body must be of type {kind}: "{got}"'


def test_number_accepts_integers_but_integer_rejects_floats() -> None:
    schema = obj_schema(n={"type": "number"}, i={"type": "integer"})
    assert validate(schema, {"n": 3, "i": 3}) == []
    assert one(schema, {"i": 3.0}).reason == "FieldValueTypeInvalid"


def test_enum_message_lists_supported_values_including_empty_string() -> None:
    schema = obj_schema(t={"type": "string", "enum": ["", "PublicIP", "LoadBalancer"]})
    cause = one(schema, {"t": "Public"})
    assert cause == FieldCause(
        "FieldValueNotSupported",
        'Unsupported value: "Public": supported values: "", "PublicIP", "LoadBalancer"',
        "t",
    )
    assert validate(schema, {"t": ""}) == []


def test_enum_tells_booleans_from_numbers() -> None:
    schema = obj_schema(v={"type": "integer", "enum": [1, 2]})
    assert validate(schema, {"v": 1}) == []
    assert one(schema, {"v": 3}).message == "Unsupported value: 3: supported values: 1, 2"


def test_required_fields_are_reported_at_their_own_path() -> None:
    schema = obj_schema(
        items={
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "kind"],
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
            },
        }
    )
    causes = validate(schema, {"items": [{"name": "a", "kind": "b"}, {}]})
    assert causes == [
        FieldCause("FieldValueRequired", "Required value", "items[1].name"),
        FieldCause("FieldValueRequired", "Required value", "items[1].kind"),
    ]


def test_numeric_bounds() -> None:
    schema = obj_schema(p={"type": "integer", "minimum": 1, "maximum": 65535})
    assert validate(schema, {"p": 1}) == [] and validate(schema, {"p": 65535}) == []
    low = one(schema, {"p": 0})
    assert low.reason == "FieldValueInvalid"
    assert low.message == "Invalid value: 0: p in body should be greater than or equal to 1"
    assert "should be less than or equal to 65535" in one(schema, {"p": 70000}).message
    exclusive = obj_schema(p={"type": "number", "minimum": 0, "exclusiveMinimum": True})
    assert "should be greater than 0" in one(exclusive, {"p": 0}).message


def test_string_length_and_pattern() -> None:
    schema = obj_schema(s={"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"})
    assert validate(schema, {"s": "abc"}) == []
    assert one(schema, {"s": "abcde"}) == FieldCause(
        "FieldValueTooLong", "Too long: may not be more than 4 bytes", "s"
    )
    assert "should be at least 2 chars long" in one(schema, {"s": "a"}).message
    assert one(schema, {"s": "AB"}).message == (
        "Invalid value: \"AB\": s in body should match '^[a-z]+$'"
    )


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("ipv4", "203.0.113.10", "203.0.113"),
        ("ipv6", "2001:db8::1", "203.0.113.10"),
        ("cidr", "10.0.0.0/24", "10.0.0.0"),
        ("mac", "02:42:ac:11:00:02", "02:42:ac"),
        ("hostname", "node-a.example", "-bad-"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "nope"),
        ("date-time", "2024-05-01T10:00:00Z", "2024-05-01"),
        ("byte", "aGVsbG8=", "not base64!"),
    ],
)
def test_string_formats(fmt: str, good: str, bad: str) -> None:
    schema = obj_schema(v={"type": "string", "format": fmt})
    assert validate(schema, {"v": good}) == []
    cause = one(schema, {"v": bad})
    assert cause.reason == "FieldValueTypeInvalid"
    assert cause.message.endswith(f'v in body must be of type {fmt}: "{bad}"')


def test_integer_formats_and_unknown_formats_are_not_checked() -> None:
    schema = obj_schema(
        i={"type": "integer", "format": "int32"}, s={"type": "string", "format": "x"}
    )
    assert validate(schema, {"i": 2**40, "s": "anything"}) == []


def test_array_bounds_and_list_types() -> None:
    schema = obj_schema(
        tags={"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3,
              "x-kubernetes-list-type": "set"},
        eps={
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["node", "kind"],
            "items": obj_schema(node={"type": "string"}, kind={"type": "string"}),
        },
    )  # fmt: skip
    assert validate(schema, {"tags": ["a", "b"]}) == []
    assert one(schema, {"tags": ["a", "b", "a"]}) == FieldCause(
        "FieldValueDuplicate", 'Duplicate value: "a"', "tags[2]"
    )
    assert one(schema, {"tags": list("abcd")}).message == "Too many: 4: must have at most 3 items"
    assert "should have at least 1 items" in one(schema, {"tags": []}).message
    ok = {"eps": [{"node": "a", "kind": "proxy"}, {"node": "a", "kind": "tunnel"}]}
    assert validate(schema, ok) == []
    dup = one(schema, {"eps": [{"node": "a", "kind": "p", "x": 1}, {"node": "a", "kind": "p"}]})
    assert dup.reason == "FieldValueDuplicate" and dup.field == "eps[1]"
    assert dup.message == 'Duplicate value: {"kind":"p","node":"a"}'


def test_additional_properties_map_values_are_checked() -> None:
    schema = obj_schema(config={"type": "object", "additionalProperties": {"type": "string"}})
    assert validate(schema, {"config": {"publicKey": "abc"}}) == []
    cause = one(schema, {"config": {"publicKey": 5}})
    assert cause.field == "config.publicKey" and cause.reason == "FieldValueTypeInvalid"


def test_nullable_and_int_or_string() -> None:
    schema = obj_schema(
        n={"type": "string", "nullable": True},
        p={"x-kubernetes-int-or-string": True},
    )
    assert validate(schema, {"n": None, "p": 80}) == []
    assert validate(schema, {"p": "http"}) == []
    assert one(schema, {"p": True}).message == (
        'Invalid value: "boolean": p in body must be of type integer,string: "boolean"'
    )


def test_unknown_fields_are_not_validation_errors_but_are_pruned() -> None:
    schema = obj_schema(spec=obj_schema(a={"type": "string"}))
    obj = {"apiVersion": "v1", "kind": "K", "metadata": {"name": "x"}, "spec": {"a": "1", "b": 2}}
    assert validate(schema, obj) == []
    assert unknown_fields(schema, obj) == ["spec.b"]
    assert prune(schema, obj) == {
        "apiVersion": "v1",
        "kind": "K",
        "metadata": {"name": "x"},
        "spec": {"a": "1"},
    }
    assert obj["spec"] == {"a": "1", "b": 2}, "prune must not change its input"


def test_preserve_unknown_fields_keeps_everything_below() -> None:
    schema = obj_schema(
        free={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        closed={"type": "object"},
    )
    obj = {"free": {"x": {"y": [1]}}, "closed": {"x": 1}}
    assert prune(schema, obj) == {"free": {"x": {"y": [1]}}, "closed": {}}
    assert unknown_fields(schema, obj) == ["closed.x"]


def test_prune_drops_nulls_of_non_nullable_fields_without_default() -> None:
    schema = obj_schema(
        a={"type": "string"},
        b={"type": "string", "nullable": True},
        c={"type": "integer", "default": 1},
    )
    assert prune(schema, {"a": None, "b": None, "c": None}) == {"b": None, "c": None}
    assert apply_defaults(schema, {"a": None, "b": None, "c": None}) == {
        "a": None,
        "b": None,
        "c": 1,
    }


def test_defaults_fill_absent_fields_recursively_without_touching_input() -> None:
    schema = obj_schema(
        cfg={
            "type": "object",
            "default": {},
            "properties": {"Replicas": {"type": "integer", "default": 0}},
        },
        items={"type": "array", "items": obj_schema(port={"type": "integer", "default": 4500})},
    )
    obj: dict[str, Any] = {"items": [{}, {"port": 1}]}
    assert apply_defaults(schema, obj) == {
        "cfg": {"Replicas": 0},
        "items": [{"port": 4500}, {"port": 1}],
    }
    assert obj == {"items": [{}, {"port": 1}]}


def test_admit_prunes_defaults_then_validates() -> None:
    schema = obj_schema(
        spec={
            "type": "object",
            "required": ["n"],
            "properties": {"n": {"type": "integer", "default": 2, "minimum": 3}},
        }
    )
    stored, causes = admit(schema, {"spec": {"junk": True}})
    assert stored == {"spec": {"n": 2}}
    assert [c.field for c in causes] == ["spec.n"]


def test_load_crd_versions() -> None:
    crd = {
        "spec": {
            "versions": [
                {"name": "v1", "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v0"},
            ]
        }
    }
    versions = load_crd_versions(crd)
    assert versions["v1"] == {"type": "object"}
    assert versions["v0"]["x-kubernetes-preserve-unknown-fields"] is True
    with pytest.raises(ValueError, match=r"no spec\.versions"):
        load_crd_versions({"spec": {}})
