"""The three PATCH formats kube-apiserver accepts for built-in types (pure, no I/O).

- JSON merge patch (RFC 7386): maps merge, null deletes, lists replace.
- JSON patch (RFC 6902): add/remove/replace/move/copy/test on JSON pointers.
- Strategic merge patch: merge patch plus list merging by the type's patchMergeKey
  (`ResourceType.merge_keys`), `$patch: replace|delete` directives, and primitive "set" lists
  (finalizers). `$setElementOrder/...` and `$retainKeys` directives are accepted and ignored.
Errors raise PatchError; the HTTP layer maps them to kube's status codes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied; `code` is the HTTP status kube-apiserver uses."""

    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---- RFC 6902 ---------------------------------------------------------------------------------


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with /", 400)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    toks = _tokens(pointer)
    if not toks:
        raise PatchError("cannot operate on the document root", 422)
    cur = doc
    for tok in toks[:-1]:
        cur = _child(cur, tok, pointer)
    return cur, toks[-1]


def _child(cur: Any, tok: str, pointer: str) -> Any:
    try:
        if isinstance(cur, list):
            return cur[int(tok)]
        return cur[tok]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"doc is missing path: {pointer!r}") from None


def _get(doc: Any, pointer: str) -> Any:
    cur = doc
    for tok in _tokens(pointer):
        cur = _child(cur, tok, pointer)
    return cur


def _add(doc: Any, pointer: str, value: Any) -> None:
    parent, tok = _parent(doc, pointer)
    if isinstance(parent, list):
        idx = len(parent) if tok == "-" else int(tok)
        if not 0 <= idx <= len(parent):
            raise PatchError(f"add operation index out of bounds: {pointer!r}")
        parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[tok] = value
    else:
        raise PatchError(f"doc is missing path: {pointer!r}")


def _remove(doc: Any, pointer: str) -> Any:
    parent, tok = _parent(doc, pointer)
    try:
        if isinstance(parent, list):
            return parent.pop(int(tok))
        return parent.pop(tok)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise PatchError(f"unable to remove nonexistent key: {pointer!r}") from None


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 operation list; returns a new document."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise PatchError("invalid JSON patch operation", 400)
        kind, path = op["op"], op["path"]
        if kind == "add":
            _add(out, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(out, path)
        elif kind == "replace":
            _remove(out, path)
            _add(out, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            _add(out, path, _remove(out, op["from"]))
        elif kind == "copy":
            _add(out, path, copy.deepcopy(_get(out, op["from"])))
        elif kind == "test":
            if _get(out, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", 400)
    return out


# ---- strategic merge --------------------------------------------------------------------------

_DIRECTIVE = "$patch"


def strategic_merge(target: Any, patch: Any, merge_keys: Mapping[str, str | None]) -> Any:
    """Strategic merge patch for a built-in type whose list keys are `merge_keys`."""
    return _smp(target, patch, merge_keys, "")


def _smp(target: Any, patch: Any, keys: Mapping[str, str | None], path: str) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    if patch.get(_DIRECTIVE) == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", _DIRECTIVE):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.partition("/")[2]
            out[name] = [v for v in out.get(name) or [] if v not in value]
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and sub in keys:
            out[key] = _merge_list(out.get(key) or [], value, keys, sub)
        else:
            out[key] = _smp(out.get(key), value, keys, sub)
    return out


def _merge_list(
    target: list[Any], patch: list[Any], keys: Mapping[str, str | None], path: str
) -> list[Any]:
    key = keys[path]
    if key is None:  # primitive set: union keeping order
        return list(target) + [v for v in patch if v not in target]
    if any(isinstance(p, Mapping) and p.get(_DIRECTIVE) == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if p.get(_DIRECTIVE) != "replace"]
    out = [copy.deepcopy(t) for t in target]
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}", 422)
        idx = next((i for i, t in enumerate(out) if t.get(key) == item[key]), None)
        if item.get(_DIRECTIVE) == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != _DIRECTIVE})
        else:
            out[idx] = _smp(out[idx], item, keys, path)
    return out
