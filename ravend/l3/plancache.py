"""`Memo`: what lets `plan()` redo only the parts of a plan whose inputs changed (pure, no I/O).

A gateway switch at the hub changes one Gateway's elected node: one pool, one peer's key and
endpoint. Rebuilding all 200 pools, re-claiming 4,000 subnets, re-making 4,000 routes and the
nft sets took ~45 ms (bench/l3_plan.py). Each stage of the planner instead keeps its last
result in a named slot together with the exact inputs it was computed from, and recomputes
only when those inputs compare unequal. Inputs are the planner's own plain values (frozen
dataclasses and tuples), and unchanged ones are usually the very same objects (the informers
keep unchanged API objects, the memo returns the same results), so the comparisons stop at
identity and cost next to nothing.

A memo is only valid for one node, settings and local facts: `bind()` empties it when they
change, so a stale slot can never be read under a different context. With no memo at all
every stage computes afresh; the tests check that both ways give equal plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


class Memo:
    """One remembered (inputs, result) per slot name."""

    def __init__(self) -> None:
        self._context: object = None
        self._slots: dict[str, tuple[object, object]] = {}
        self.hits = 0
        self.misses = 0
        """Counters for tests and the bench."""

    def bind(self, context: object) -> None:
        """Use the memo for `context` (node, settings, facts); forget everything if it changed."""
        if context != self._context:
            self._context = context
            self._slots.clear()

    def get(self, slot: str, inputs: object, make: Callable[[], T]) -> T:
        """`make()`'s result, reused when `inputs` equal the inputs of the slot's last result.
        `inputs` must hold everything `make` reads besides the bound context."""
        last = self._slots.get(slot)
        if last is not None and last[0] == inputs:
            self.hits += 1
            return cast(T, last[1])
        self.misses += 1
        value = make()
        self._slots[slot] = (inputs, value)
        return value

    def keep_only(self, prefix: str, slots: set[str]) -> None:
        """Forget slots named `prefix...` other than `slots` (pools of deleted Gateways)."""
        for name in [n for n in self._slots if n.startswith(prefix) and n not in slots]:
            del self._slots[name]

    def clear(self) -> None:
        self._context = None
        self._slots.clear()


def memo_get(memo: Memo | None, slot: str, inputs: object, make: Callable[[], T]) -> T:
    """`make()` through `memo`, or plainly when there is none."""
    return make() if memo is None else memo.get(slot, inputs, make)


__all__ = ["Memo", "memo_get"]
