"""Structural OpenAPI v3 schemas of custom resources, as kube-apiserver applies them (no I/O).

The embedded API server (`ravend.sim`) serves the Gateway CRD from `manifests/gateway-crd.yaml`
and must treat objects the way a real kube-apiserver would, or the demo would accept Gateways a
real cluster rejects. The write path there is `prune` (drop unknown fields), `apply_defaults`
(`default:` values), then `validate`; `admit` does all three in that order.

Messages copy kube-apiserver's `field.Error.ErrorBody()` wording so what a user sees against the
simulator matches a real cluster, e.g. `Unsupported value: "foo": supported values: "proxy",
"tunnel"`. Field paths use kube's form, `spec.endpoints[0].type`.

Supported keywords: type, nullable, properties, required, additionalProperties, items, enum,
minimum/maximum (+ exclusive), multipleOf, minLength/maxLength, pattern, format, minItems/maxItems,
minProperties/maxProperties, default, x-kubernetes-preserve-unknown-fields,
x-kubernetes-int-or-string, x-kubernetes-list-type (set/map) with x-kubernetes-list-map-keys.
Not supported: CEL (x-kubernetes-validations), embedded resources, ObjectMeta validation.
Formats are checked only on strings, like kube: "int32"/"int64" on integers are accepted as-is.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"

ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
"""Kept at the root of every custom resource whatever the schema says (kube handles them itself)."""


@dataclass(frozen=True)
class FieldCause:
    """One rejected field, shaped like a kube `StatusCause`."""

    reason: str
    """kube's cause type, e.g. "FieldValueRequired", "FieldValueNotSupported"."""
    message: str
    """kube's error body, e.g. `Required value` (without the field path)."""
    field: str
    """Path of the offending field, e.g. "spec.endpoints[0].type"; "" for the root."""


# ---------------------------------------------------------------- value helpers


_JSON_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("null", type(None)),
    ("boolean", bool),  # before integer: bool is an int in Python
    ("integer", int),
    ("number", float),
    ("string", str),
    ("object", Mapping),
    ("array", (list, tuple)),
)


def _json_type(v: object) -> str:
    """JSON type name of a decoded value, as go-openapi reports it in type errors."""
    return next((name for name, t in _JSON_TYPES if isinstance(v, t)), type(v).__name__)


def _canon(v: object) -> str:
    """Canonical JSON text, so equality tells true from 1 (Python's == does not)."""
    try:
        return json.dumps(
            v, sort_keys=True, separators=(",", ":"), default=repr, ensure_ascii=False
        )
    except (TypeError, ValueError):  # non-string keys of mixed types (YAML allows them)
        return repr(v)


def _num(v: float) -> str:
    """Go's %v for a float64: 2.0 prints as 2."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return str(v)


def _show(v: object) -> str:
    """A bad value as kube prints it: strings quoted, scalars plain, the rest as JSON."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _num(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return _canon(v)


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _body(path: str) -> str:
    """The subject of go-openapi's messages: `<path> in body`."""
    return f"{path or '.'} in body"


def _invalid(out: list[FieldCause], path: str, value: object, detail: str) -> None:
    out.append(FieldCause(INVALID, f"Invalid value: {_show(value)}: {detail}", path))


def _type_invalid(out: list[FieldCause], path: str, value: object, want: str) -> None:
    got = _json_type(value)
    detail = f"{_body(path)} must be of type {want}: {json.dumps(got)}"
    out.append(FieldCause(TYPE_INVALID, f"Invalid value: {json.dumps(got)}: {detail}", path))


def _int_kw(s: Mapping[str, Any], key: str) -> int | None:
    """An integer keyword, or None when absent or malformed (a bad schema must not crash us)."""
    v = s.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num_kw(s: Mapping[str, Any], key: str) -> float | None:
    v = s.get(key)
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


# ---------------------------------------------------------------- formats

_LABEL = r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?"


def _matches(pattern: str) -> Callable[[str], bool]:
    return lambda s: re.fullmatch(pattern, s) is not None


def _parses(fn: Callable[[str], object]) -> Callable[[str], bool]:
    def check(s: str) -> bool:
        try:
            fn(s)
        except (ValueError, TypeError, binascii.Error):
            return False
        return True

    return check


def _cidr(s: str) -> object:
    if "/" not in s:
        raise ValueError(s)  # Go's net.ParseCIDR wants a prefix length
    return ipaddress.ip_network(s, strict=False)


def _date_time(s: str) -> object:
    if "T" not in s.upper():
        raise ValueError(s)
    return datetime.datetime.fromisoformat(s.upper().replace("Z", "+00:00"))


_FORMATS: dict[str, Callable[[str], bool]] = {
    "ipv4": _parses(ipaddress.IPv4Address),
    "ipv6": _parses(ipaddress.IPv6Address),
    "cidr": _parses(_cidr),
    "mac": _matches(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}"),
    "hostname": _matches(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?"),
    "email": _matches(r"[^@\s]+@[^@\s]+"),
    "hexcolor": _matches(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})"),
    "uuid": _parses(uuid.UUID),
    "uuid3": _parses(uuid.UUID),
    "uuid4": _parses(uuid.UUID),
    "uuid5": _parses(uuid.UUID),
    "byte": _parses(lambda s: base64.b64decode(s, validate=True)),
    "date": _parses(datetime.date.fromisoformat),
    "date-time": _parses(_date_time),
    "datetime": _parses(_date_time),
}
"""String formats kube-apiserver checks (a subset of its registry); others are accepted."""


# ---------------------------------------------------------------- validation


def validate(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[FieldCause]:
    """Every violation of `schema` by `obj`, in a stable order; [] means valid.

    Like kube, unknown fields are not errors here (they are pruned, see `prune`). Never raises,
    whatever `obj` holds.
    """
    out: list[FieldCause] = []
    _check(schema, obj, "", out)
    return out


def _type_ok(s: Mapping[str, Any], v: object, path: str, out: list[FieldCause]) -> bool:
    if s.get("x-kubernetes-int-or-string") is True:
        ok = isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            _type_invalid(out, path, v, "integer,string")
        return ok
    want = s.get("type")
    if not isinstance(want, str) or not want:
        return True  # untyped: only legal with preserve-unknown-fields
    got = _json_type(v)
    ok = got == want or (want == "number" and got == "integer")
    if not ok:
        _type_invalid(out, path, v, want)
    return ok


def _check(s: object, v: object, path: str, out: list[FieldCause]) -> None:
    if not isinstance(s, Mapping):
        return
    if v is None and s.get("nullable") is True:
        return
    if not _type_ok(s, v, path, out):
        return  # like kube: a value of the wrong type gets no further checks
    enum = s.get("enum")
    if isinstance(enum, list) and _canon(v) not in {_canon(e) for e in enum}:
        allowed = ", ".join(json.dumps(e) if isinstance(e, str) else _canon(e) for e in enum)
        msg = f"Unsupported value: {_show(v)}: supported values: {allowed}"
        out.append(FieldCause(NOT_SUPPORTED, msg, path))
    if isinstance(v, str):
        _check_string(s, v, path, out)
    elif isinstance(v, int | float) and not isinstance(v, bool):
        _check_number(s, v, path, out)
    elif isinstance(v, Mapping):
        _check_object(s, v, path, out)
    elif isinstance(v, list | tuple):
        _check_array(s, list(v), path, out)


def _check_string(s: Mapping[str, Any], v: str, path: str, out: list[FieldCause]) -> None:
    longest, shortest = _int_kw(s, "maxLength"), _int_kw(s, "minLength")
    if longest is not None and len(v) > longest:
        out.append(FieldCause(TOO_LONG, f"Too long: may not be more than {longest} bytes", path))
    if shortest is not None and len(v) < shortest:
        _invalid(out, path, v, f"{_body(path)} should be at least {shortest} chars long")
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, v) is not None
        except re.error:
            matched = True  # kube rejects such a CRD up front; here we just skip the check
        if not matched:
            _invalid(out, path, v, f"{_body(path)} should match '{pattern}'")
    fmt = s.get("format")
    check = _FORMATS.get(fmt) if isinstance(fmt, str) else None
    if check is not None and not check(v):
        detail = f"{_body(path)} must be of type {fmt}: {json.dumps(v, ensure_ascii=False)}"
        out.append(FieldCause(TYPE_INVALID, f"Invalid value: {_show(v)}: {detail}", path))


def _check_number(s: Mapping[str, Any], v: float, path: str, out: list[FieldCause]) -> None:
    low, high, step = _num_kw(s, "minimum"), _num_kw(s, "maximum"), _num_kw(s, "multipleOf")
    if low is not None:
        if s.get("exclusiveMinimum") is True and not v > low:
            _invalid(out, path, v, f"{_body(path)} should be greater than {_num(low)}")
        elif not v >= low:
            _invalid(out, path, v, f"{_body(path)} should be greater than or equal to {_num(low)}")
    if high is not None:
        if s.get("exclusiveMaximum") is True and not v < high:
            _invalid(out, path, v, f"{_body(path)} should be less than {_num(high)}")
        elif not v <= high:
            _invalid(out, path, v, f"{_body(path)} should be less than or equal to {_num(high)}")
    if step and not _is_multiple(v, step):
        _invalid(out, path, v, f"{_body(path)} should be a multiple of {_num(step)}")


def _is_multiple(v: float, step: float) -> bool:
    if isinstance(v, int) and isinstance(step, int):
        return v % step == 0  # exact, even for integers beyond float range
    try:
        rest = math.remainder(float(v), float(step))
    except (OverflowError, ValueError):
        return True  # not representable: kube's float64 arithmetic could not judge it either
    return not math.isfinite(rest) or math.isclose(rest, 0, abs_tol=1e-9)


def _check_object(
    s: Mapping[str, Any], v: Mapping[Any, Any], path: str, out: list[FieldCause]
) -> None:
    required = s.get("required")
    for name in required if isinstance(required, list) else []:
        if isinstance(name, str) and name not in v:
            out.append(FieldCause(REQUIRED, "Required value", _child(path, name)))
    fewest, most = _int_kw(s, "minProperties"), _int_kw(s, "maxProperties")
    if fewest is not None and len(v) < fewest:
        _invalid(out, path, v, f"{_body(path)} should have at least {fewest} properties")
    if most is not None and len(v) > most:
        out.append(
            FieldCause(TOO_MANY, f"Too many: {len(v)}: must have at most {most} items", path)
        )
    props = s.get("properties")
    props = props if isinstance(props, Mapping) else {}
    extra = s.get("additionalProperties")
    for key in sorted(v, key=str):
        sub = props.get(key, extra)
        _check(sub, v[key], _child(path, str(key)), out)


def _check_array(s: Mapping[str, Any], v: list[Any], path: str, out: list[FieldCause]) -> None:
    fewest, most = _int_kw(s, "minItems"), _int_kw(s, "maxItems")
    if fewest is not None and len(v) < fewest:
        _invalid(out, path, v, f"{_body(path)} should have at least {fewest} items")
    if most is not None and len(v) > most:
        out.append(
            FieldCause(TOO_MANY, f"Too many: {len(v)}: must have at most {most} items", path)
        )
    for i, item in enumerate(v):
        _check(s.get("items"), item, f"{path}[{i}]", out)
    _check_list_type(s, v, path, out)


def _check_list_type(s: Mapping[str, Any], v: list[Any], path: str, out: list[FieldCause]) -> None:
    """x-kubernetes-list-type set/map: kube rejects repeated items (set) or keys (map)."""
    kind = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys")
    seen: set[str] = set()
    for i, item in enumerate(v):
        if kind == "set":
            ident: object = item
        elif kind == "map" and isinstance(keys, list) and isinstance(item, Mapping):
            ident = {str(k): item.get(k) for k in keys if k in item}
        else:
            continue
        text = _canon(ident)
        if text in seen:
            out.append(FieldCause(DUPLICATE, f"Duplicate value: {_show(ident)}", f"{path}[{i}]"))
        seen.add(text)


# ---------------------------------------------------------------- pruning and defaulting


def prune(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` without the fields `schema` does not know, as kube stores custom resources.

    Also drops `null` values of non-nullable fields that have no default, as kube does after
    defaulting. apiVersion, kind and metadata survive at the root.
    """
    pruned = _prune(schema, obj, "", [], root=True)
    return dict(pruned) if isinstance(pruned, Mapping) else {}


def unknown_fields(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[str]:
    """Paths of the fields `prune` would drop as unknown (for fieldValidation=Strict/Warn)."""
    dropped: list[str] = []
    _prune(schema, obj, "", dropped, root=True)
    return dropped


def _prune(s: object, v: object, path: str, dropped: list[str], *, root: bool = False) -> object:
    if not isinstance(s, Mapping):
        return copy.deepcopy(v)
    if isinstance(v, list | tuple):
        return [_prune(s.get("items"), x, f"{path}[{i}]", dropped) for i, x in enumerate(v)]
    if not isinstance(v, Mapping):
        return v
    props = s.get("properties")
    props = props if isinstance(props, Mapping) else {}
    extra = s.get("additionalProperties")
    keep_unknown = extra is True or s.get("x-kubernetes-preserve-unknown-fields") is True
    out: dict[Any, Any] = {}
    for key, value in v.items():
        where = _child(path, str(key))
        sub = props.get(key, extra if isinstance(extra, Mapping) else None)
        if root and key in ROOT_FIELDS:
            out[key] = copy.deepcopy(value)  # `metadata: {type: object}` must not empty it
        elif isinstance(sub, Mapping):
            if value is None and sub.get("nullable") is not True and "default" not in sub:
                continue  # kube: PruneNonNullableNullsWithoutDefaults
            out[key] = _prune(sub, value, where, dropped)
        elif keep_unknown:
            out[key] = copy.deepcopy(value)
        else:
            dropped.append(where)
    return out


def apply_defaults(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` with every absent (or null, non-nullable) field that has a `default` set.

    Recurses into values it just defaulted, as kube does, so nested defaults apply too.
    """
    result = copy.deepcopy(dict(obj))
    _default(schema, result)
    return result


def _default(s: object, v: object) -> None:
    if not isinstance(s, Mapping):
        return
    if isinstance(v, list):
        for item in v:
            _default(s.get("items"), item)
        return
    if not isinstance(v, dict):
        return
    props = s.get("properties")
    props = props if isinstance(props, Mapping) else {}
    for key, sub in props.items():
        if not isinstance(sub, Mapping) or "default" not in sub:
            continue
        if key not in v or (v[key] is None and sub.get("nullable") is not True):
            v[key] = copy.deepcopy(sub["default"])
    extra = s.get("additionalProperties")
    for key, value in v.items():
        _default(props.get(key, extra), value)


def admit(
    schema: Mapping[str, Any], obj: Mapping[str, Any]
) -> tuple[dict[str, Any], list[FieldCause]]:
    """kube's write path for a custom resource: prune, default, then validate what is left."""
    stored = apply_defaults(schema, prune(schema, obj))
    return stored, validate(schema, stored)


# ---------------------------------------------------------------- CRDs


def load_crd_versions(crd: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Version name -> openAPIV3Schema of an apiextensions.k8s.io/v1 CRD (or legacy v1beta1).

    A version without any schema gets one that keeps everything, as kube's v1beta1 CRDs did.
    Raises ValueError when `crd` has no versions.
    """
    spec = crd.get("spec")
    versions = spec.get("versions") if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(versions, list) or not versions:
        raise ValueError("CRD has no spec.versions")
    shared = spec.get("validation")
    fallback = shared.get("openAPIV3Schema") if isinstance(shared, Mapping) else None
    result: dict[str, Mapping[str, Any]] = {}
    for version in versions:
        if not isinstance(version, Mapping) or not isinstance(version.get("name"), str):
            raise ValueError(f"CRD version without a name: {version!r}")
        own = version.get("schema")
        schema = own.get("openAPIV3Schema") if isinstance(own, Mapping) else fallback
        if not isinstance(schema, Mapping):
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        result[version["name"]] = schema
    return result
