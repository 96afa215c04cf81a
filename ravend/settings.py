"""Agent settings: frozen dataclasses built once from flags and environment (pure, no I/O).

One group per concern; every field says its unit, default and why. `build_settings(argv, env)`
is the only constructor the composition root uses, so the mapping from flags/env to settings is
tested in one place and nothing else reads `os.environ`.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ravend.election.settings import ElectionSettings
from ravend.kube.settings import KubeSettings

DEFAULT_STATE_DIR = Path("/var/lib/raven")
DEFAULT_OBSERVE_PORT = 10265
DEFAULT_WEBHOOK_PORT = 10266


class SettingsError(ValueError):
    """A flag or environment variable has a value ravend cannot run with."""


@dataclass(frozen=True)
class ObserveSettings:
    host: str = "0.0.0.0"
    """Address of the health/metrics server; 0.0.0.0 so kubelet probes reach it on hostNetwork."""
    port: int = DEFAULT_OBSERVE_PORT
    """TCP port of /healthz, /readyz, /metrics (10265: next to Raven's 10262-10264)."""


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    """"text" for humans, "json" for log collectors (one object per line)."""
    level: str = "INFO"
    """Root log level name."""


@dataclass(frozen=True)
class RuntimeSettings:
    shutdown_deadline: float = 20.0
    """Seconds from SIGTERM until ravend exits even if a subsystem hangs; below the pod's 30 s
    terminationGracePeriodSeconds so the kubelet never has to SIGKILL us."""
    event_loop: str = "auto"
    """"auto" (= "asyncio"), "asyncio" or "uvloop". The default is the standard loop: uvloop
    cannot open pyroute2's AF_NETLINK sockets (L3 fails on it) and uvloop 0.23 aborted under
    connection churn on the build machine (environment.md)."""
    l7_event_loop: str = "uvloop"
    """Where the L7 data path (front ends, tunnel server and clients, edge splices) runs:
    "uvloop" or "asyncio" = an event loop of that kind in its own thread, so L3 passes,
    informer decodes and the election never stall kubelet requests; "same" = on the agent's
    loop. uvloop, which L3 cannot use, carries L7 for about 27 % less CPU per kept request than
    asyncio (bench/l7_proxy); it ran the churn soak, the churn runs and the L7 end-to-end suite
    without a fault here, unlike the uvloop abort environment.md reports (asyncio stays one
    flag away). Certificates and API calls stay on the agent's loop."""


L7_EVENT_LOOPS = ("same", "asyncio", "uvloop")


@dataclass(frozen=True)
class AgentSettings:
    node_name: str
    """This node's Kubernetes name (NODE_NAME from the downward API)."""
    node_ip: str
    """This node's InternalIP (NODE_IP from the downward API); the underlay address."""
    kubeconfig: Path | None = None
    """Kubeconfig path; None means in-cluster service account credentials."""
    state_dir: Path = DEFAULT_STATE_DIR
    """Directory for keys and certificates (0700); nothing else is stored on disk."""
    observe: ObserveSettings = field(default_factory=ObserveSettings)
    """Health, readiness and metrics server."""
    log: LogSettings = field(default_factory=LogSettings)
    """Log format and level."""
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    """Shutdown deadline and event loop."""
    webhook_port: int = DEFAULT_WEBHOOK_PORT
    """TLS port of the conversion/validation webhooks (0 disables them)."""
    election: ElectionSettings = field(default_factory=ElectionSettings)
    """Leadership and gateway-heartbeat timings (see docs/failover.md)."""
    kube: KubeSettings = field(default_factory=KubeSettings)
    """API client and informer timings; `kubeconfig` here always equals the field above."""


def agent_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ravend agent", description="Run the ravend node agent.")
    p.add_argument("--node-name", help="this node's name (env NODE_NAME)")
    p.add_argument("--node-ip", help="this node's InternalIP (env NODE_IP)")
    p.add_argument("--kubeconfig", help="kubeconfig path (env KUBECONFIG; default: in-cluster)")
    p.add_argument("--state-dir", help=f"keys and certificates (default {DEFAULT_STATE_DIR})")
    p.add_argument("--observe-host", help="health/metrics bind address")
    p.add_argument("--observe-port", type=int, help=f"health/metrics port ({DEFAULT_OBSERVE_PORT})")
    p.add_argument("--webhook-port", type=int, help=f"webhook TLS port ({DEFAULT_WEBHOOK_PORT})")
    p.add_argument("--log-format", choices=["text", "json"], help="log format (env LOG_FORMAT)")
    p.add_argument("--log-level", help="log level (env LOG_LEVEL)")
    p.add_argument("--shutdown-deadline", type=float, help="seconds (default 20)")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], help="event loop")
    p.add_argument(
        "--l7-event-loop",
        choices=L7_EVENT_LOOPS,
        help="L7 data path: own thread with a uvloop or asyncio loop, or 'same' as the agent "
        "(default uvloop; env RAVEND_L7_EVENT_LOOP)",
    )
    p.add_argument(
        "--watch-silence",
        type=float,
        help="seconds a watch may stay without event or bookmark before it is re-opened "
        "(default 75; 0 = off; env RAVEND_WATCH_SILENCE_S)",
    )
    return p


def _pick(flag: object, env: Mapping[str, str], key: str) -> str | None:
    """A flag wins over the environment; empty strings count as unset."""
    if flag not in (None, ""):
        return str(flag)
    value = env.get(key, "")
    return value or None


def _port(value: str | None, default: int, what: str) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise SettingsError(f"{what}: {value!r} is not a TCP port")
    return int(value)


def _watch_silence(value: str | None) -> float:
    if value is None:
        return KubeSettings.watch_silence_s
    try:
        seconds = float(value)
    except ValueError as exc:
        raise SettingsError(f"watch silence: {value!r} is not a number of seconds") from exc
    if not 0 <= seconds < 86400:
        raise SettingsError(f"watch silence: {value!r} must be 0 (off) or positive seconds")
    return seconds


def build_settings(argv: Sequence[str], env: Mapping[str, str]) -> AgentSettings:
    """Parse agent flags and environment into settings; raises SettingsError on bad values."""
    ns = agent_parser().parse_args(list(argv))
    node_name = _pick(ns.node_name, env, "NODE_NAME")
    if not node_name:
        raise SettingsError("node name is required: --node-name or NODE_NAME")
    node_ip = _pick(ns.node_ip, env, "NODE_IP") or ""
    if node_ip:
        try:
            ipaddress.ip_address(node_ip)
        except ValueError as exc:
            raise SettingsError(f"node IP {node_ip!r} is not an IP address") from exc
    kubeconfig = _pick(ns.kubeconfig, env, "KUBECONFIG")
    log_format = _pick(ns.log_format, env, "LOG_FORMAT") or "text"
    if log_format not in ("text", "json"):
        raise SettingsError(f"log format {log_format!r}: want text or json")
    deadline = ns.shutdown_deadline if ns.shutdown_deadline is not None else 20.0
    if deadline <= 0:
        raise SettingsError("shutdown deadline must be positive")
    kubeconfig_path = Path(kubeconfig) if kubeconfig else None
    l7_loop = _pick(ns.l7_event_loop, env, "RAVEND_L7_EVENT_LOOP") or "uvloop"
    if l7_loop not in L7_EVENT_LOOPS:
        raise SettingsError(f"L7 event loop {l7_loop!r}: want one of {', '.join(L7_EVENT_LOOPS)}")
    return AgentSettings(
        node_name=node_name,
        node_ip=node_ip,
        kubeconfig=kubeconfig_path,
        state_dir=Path(_pick(ns.state_dir, env, "RAVEND_STATE_DIR") or DEFAULT_STATE_DIR),
        observe=ObserveSettings(
            host=_pick(ns.observe_host, env, "RAVEND_OBSERVE_HOST") or "0.0.0.0",
            port=_port(
                _pick(ns.observe_port, env, "RAVEND_OBSERVE_PORT"),
                DEFAULT_OBSERVE_PORT,
                "observe port",
            ),
        ),
        log=LogSettings(
            format=log_format,
            level=(_pick(ns.log_level, env, "LOG_LEVEL") or "INFO").upper(),
        ),
        runtime=RuntimeSettings(
            shutdown_deadline=deadline,
            event_loop=_pick(ns.event_loop, env, "RAVEND_EVENT_LOOP") or "auto",
            l7_event_loop=l7_loop,
        ),
        webhook_port=_port(
            _pick(ns.webhook_port, env, "RAVEND_WEBHOOK_PORT"), DEFAULT_WEBHOOK_PORT, "webhook port"
        ),
        kube=KubeSettings(
            kubeconfig=kubeconfig_path,
            watch_silence_s=_watch_silence(_pick(ns.watch_silence, env, "RAVEND_WATCH_SILENCE_S")),
        ),
    )
