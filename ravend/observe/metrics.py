"""Process-wide Prometheus metrics shared by several subsystems (no I/O at import).

Subsystem-specific metrics live next to their code; what is here is counted by the runtime
itself: role lifecycle, reconcile passes and errors by subsystem (house style 10).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROLE_RUNNING = Gauge("ravend_role_running", "1 while a role task runs on this node", ["role"])
ROLE_CRASHES = Counter(
    "ravend_role_crashes_total", "Role tasks that crashed or returned unexpectedly", ["role"]
)
RECONCILES = Counter("ravend_reconciles_total", "Reconcile passes by subsystem", ["subsystem"])
ERRORS = Counter("ravend_errors_total", "Errors by subsystem and kind", ["subsystem", "kind"])
READY = Gauge("ravend_ready", "1 when /readyz reports ready")
INFORMER_WATCH_RESTARTS = Counter(
    "ravend_informer_watch_restarts_total",
    "Informer watches that ended and were re-opened, by resource and reason (closed: the server"
    " ended it; silent: no event nor bookmark within the silence limit; expired: 410 Gone, a"
    " relist follows; error: any other failure)",
    ["resource", "reason"],
)
