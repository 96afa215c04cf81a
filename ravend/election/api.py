"""The few API calls the election loops make, behind one small port (adapter does I/O).

`ElectionApi` is the port: Leases by name, a conditional Gateway status write, Events. The loops
depend only on it; `KubeElectionApi` is the thin adapter over `ravend.kube.KubeClient` (typed
models at the boundary, house style 5). Errors are `ravend.kube.errors` types: `Conflict` and
`AlreadyExists` mean "someone else wrote first", `Unavailable` means "try again later".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ravend.election.pickup import PickupEvent
from ravend.kube import errors
from ravend.kube.codec import gateway_from_json, gateway_to_json, lease_from_json, lease_to_json
from ravend.kube.models import ObjectRef
from ravend.kube.resources import GATEWAYS, LEASES
from ravend.model import Gateway, Lease

if TYPE_CHECKING:
    from ravend.kube.client import KubeClient


class ElectionApi(Protocol):
    async def get_lease(self, namespace: str, name: str) -> Lease | None:
        """The Lease, or None if it does not exist."""

    async def create_lease(self, lease: Lease) -> Lease:
        """Create; raises AlreadyExists if someone else created it first."""

    async def replace_lease(self, lease: Lease) -> Lease:
        """Replace, conditional on lease.meta.resource_version (Conflict if stale)."""

    async def write_gateway_status(self, gw: Gateway) -> Gateway:
        """Write gw.status, conditional on gw.meta.resource_version (Conflict if stale)."""

    async def emit_event(self, gw: Gateway, event: PickupEvent) -> None:
        """Best-effort Event on the Gateway."""


class KubeElectionApi:
    """`ElectionApi` over the shared KubeClient."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def get_lease(self, namespace: str, name: str) -> Lease | None:
        try:
            return lease_from_json(await self._client.get(LEASES, name, namespace))
        except errors.NotFound:
            return None

    async def create_lease(self, lease: Lease) -> Lease:
        return lease_from_json(await self._client.create(LEASES, lease_to_json(lease)))

    async def replace_lease(self, lease: Lease) -> Lease:
        return lease_from_json(await self._client.replace(LEASES, lease_to_json(lease)))

    async def write_gateway_status(self, gw: Gateway) -> Gateway:
        # The status subresource ignores spec, and resourceVersion makes the write atomic
        # against any concurrent writer (a previous leader included).
        return gateway_from_json(await self._client.replace_status(GATEWAYS, gateway_to_json(gw)))

    async def emit_event(self, gw: Gateway, event: PickupEvent) -> None:
        ref = ObjectRef(
            kind="Gateway",
            name=gw.name,
            uid=gw.meta.uid,
            api_version=GATEWAYS.api_version,
        )
        await self._client.emit_event(ref, str(event.type), event.reason, event.message)
