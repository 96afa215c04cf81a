"""Readiness bookkeeping (pure state, no I/O).

/readyz is true only when every *required* condition holds: the informers have synced and every
enabled plane has applied its desired state at least once. Planes add their requirement when
they start and drop it when they stop, so a disabled plane never blocks readiness and an
enabled one that never managed to apply keeps the pod unready (health that reflects reality).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ravend.observe.metrics import READY


@dataclass
class Readiness:
    required: set[str] = field(default_factory=set)
    satisfied: set[str] = field(default_factory=set)
    detail: dict[str, str] = field(default_factory=dict)

    def require(self, name: str) -> None:
        self.required.add(name)
        self._update()

    def drop(self, name: str) -> None:
        self.required.discard(name)
        self.satisfied.discard(name)
        self.detail.pop(name, None)
        self._update()

    def mark(self, name: str, ok: bool = True, detail: str = "") -> None:
        """Record the outcome of the latest attempt of `name` (an apply, a sync)."""
        if ok:
            self.satisfied.add(name)
        else:
            self.satisfied.discard(name)
        if detail:
            self.detail[name] = detail
        else:
            self.detail.pop(name, None)
        self._update()

    @property
    def ready(self) -> bool:
        return self.required <= self.satisfied

    def report(self) -> dict[str, object]:
        missing = sorted(self.required - self.satisfied)
        return {
            "ready": self.ready,
            "waiting_for": missing,
            "detail": dict(sorted(self.detail.items())),
        }

    def _update(self) -> None:
        READY.set(1 if self.ready else 0)
