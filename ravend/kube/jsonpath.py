"""Typed access to decoded JSON with field paths in the errors (pure, no I/O).

The codecs read API objects through these helpers so a malformed object fails with
`CodecError("spec.endpoints[1].port", "expected an integer, got 'x'")` rather than a bare
KeyError/TypeError deep inside a planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CodecError(ValueError):
    """An API object does not have the shape ravend expects; `path` names the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def opt_map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CodecError(join(path, key), f"expected an object, got {type(value).__name__}")
    return value


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CodecError(join(path, key), f"expected a list, got {type(value).__name__}")
    return value


def opt_str(obj: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CodecError(join(path, key), f"expected a string, got {value!r}")
    return value


def req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    if obj.get(key) is None:
        raise CodecError(join(path, key), "required")
    return opt_str(obj, key, path)


def opt_int(obj: Mapping[str, Any], key: str, path: str, default: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        return default
    # bool is an int in Python, but `true` is not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(join(path, key), f"expected an integer, got {value!r}")
    return value


def opt_bool(obj: Mapping[str, Any], key: str, path: str, default: bool = False) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CodecError(join(path, key), f"expected a boolean, got {value!r}")
    return value


def opt_str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = opt_map(obj, key, path)
    for k, v in value.items():
        if not isinstance(v, str):
            raise CodecError(f"{join(path, key)}.{k}", f"expected a string, got {v!r}")
    return dict(value)
