"""Label and field selector parsing and matching, as apimachinery's `labels`/`fields` do (pure).

Grammar (labels.Parse): comma-separated requirements, each one of `key`, `!key`, `key=v`,
`key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`, `key>n`, `key<n`. Keys are qualified
names (`prefix/name`); values are label values (may be empty). Parse errors raise ValueError
with a message close to kube's; the HTTP layer turns them into 400 BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS1123 = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_DNS1123}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")

OPS = ("=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt")


@dataclass(frozen=True)
class Requirement:
    """One selector requirement; `values` is empty for exists/!exists."""

    key: str
    op: str
    """One of "in", "notin", "exists", "!", "gt", "lt" ("=" and "==" parse as "in")."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        # gt/lt: both sides must be integers, as in apimachinery.
        try:
            left, right = int(value), int(self.values[0])
        except ValueError:
            return False
        return has and (left > right if self.op == "gt" else left < right)


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; empty matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _check_key(key: str) -> str:
    name = key.rpartition("/")[2]
    if not key or not _KEY_RE.match(key) or len(name) > 63 or len(key.partition("/")[0]) > 253:
        raise ValueError(f"unable to parse requirement: invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise ValueError(f"unable to parse requirement: invalid label value: {value!r}")
    return value


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError("unable to parse requirement: unbalanced parentheses")
    parts.append("".join(cur))
    return parts


_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(.*?)\s*$")


def _parse_one(text: str) -> Requirement:
    if m := _SET_RE.match(text):
        values = tuple(sorted({_check_value(v.strip()) for v in m.group(3).split(",")}))
        return Requirement(_check_key(m.group(1)), m.group(2), values)
    if m := _CMP_RE.match(text):
        key, op, value = _check_key(m.group(1)), m.group(2), m.group(3)
        if op in ("<", ">"):
            if not re.fullmatch(r"-?\d+", value):
                raise ValueError(
                    f"unable to parse requirement: for 'gt', 'lt' operators, "
                    f"exactly one integer value is required, got {value!r}"
                )
            return Requirement(key, "gt" if op == ">" else "lt", (value,))
        return Requirement(key, "notin" if op == "!=" else "in", (_check_value(value),))
    stripped = text.strip()
    if stripped.startswith("!"):
        return Requirement(_check_key(stripped[1:].strip()), "!")
    return Requirement(_check_key(stripped), "exists")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a labelSelector query string; raises ValueError on bad syntax."""
    if not text.strip():
        return LabelSelector()
    reqs = tuple(_parse_one(part) for part in _split_top(text))
    return LabelSelector(reqs)


# ---- field selectors -------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


FieldGetter = Callable[[Mapping[str, Any]], str]


def _path_getter(path: str) -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        return "" if cur is None else str(cur)

    return get


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.requirements:
            if (_path_getter(req.field)(obj) == req.value) == req.negate:
                return False
        return True


def parse_field_selector(text: str, supported: tuple[str, ...]) -> FieldSelector:
    """Parse a fieldSelector; unknown field labels are rejected as kube-apiserver does."""
    reqs: list[FieldRequirement] = []
    for part in (p for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{part}'")
        field_name, op, value = m.groups()
        if field_name not in ("metadata.name", "metadata.namespace", *supported):
            raise ValueError(
                f'"{field_name}" is not a known field selector: only "metadata.name", '
                f'"metadata.namespace"' + "".join(f', "{s}"' for s in supported)
            )
        reqs.append(FieldRequirement(field_name, value, op == "!="))
    return FieldSelector(tuple(reqs))
