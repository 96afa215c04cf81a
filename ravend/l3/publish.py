"""Publishing this node's WireGuard public key into its Gateway endpoints (I/O: API writes).

Every tunnel candidate publishes, not only the elected one, so a gateway switch needs no key
exchange: the peers already know the next gateway's key when the election moves the endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ravend.model import CONFIG_PUBLIC_KEY, ClusterView, EndpointType

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient


async def publish_public_key(
    client: KubeClient, view: ClusterView, me: str, public_key: str
) -> list[str]:
    """Write `public_key` into every tunnel endpoint naming `me` whose key differs (spec).

    Every candidate publishes, not only the elected one, so a gateway switch needs no key
    exchange. Returns the names of the Gateways written.
    """
    from ravend.kube.resources import GATEWAYS

    def mutate(obj: dict[str, Any]) -> dict[str, Any] | None:
        changed = False
        for ep in (obj.get("spec") or {}).get("endpoints") or []:
            if ep.get("nodeName") == me and ep.get("type") == EndpointType.TUNNEL.value:
                config = ep.setdefault("config", {}) or {}
                if config.get(CONFIG_PUBLIC_KEY) != public_key:
                    ep["config"] = {**config, CONFIG_PUBLIC_KEY: public_key}
                    changed = True
        return obj if changed else None

    written = []
    for name, gw in sorted(view.gateways.items()):
        stale = [
            e
            for e in gw.spec.endpoints
            if e.node_name == me
            and e.type == EndpointType.TUNNEL
            and e.config.get(CONFIG_PUBLIC_KEY) != public_key
        ]
        if stale:
            await client.update_with_retry(GATEWAYS, name, None, mutate)
            written.append(name)
    return written


__all__ = ["publish_public_key"]
