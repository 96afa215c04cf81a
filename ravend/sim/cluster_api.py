"""The simulated cluster's API server process and its seeding (I/O: process, files, HTTP).

`SimCluster.up` writes an `ApiServerSpec` (listen address, SANs, token identities, kubeconfigs
to write) and starts `python -m ravend.sim.cluster_api SPEC` inside the API namespace. That
process serves `SimApiServer`, registers the identities, writes the kubeconfigs, then creates
a ready file; the parent waits for it and POSTs the initial objects with the admin kubeconfig.
The host reaches the server through the root<->API veth (a /30), the nodes over the WAN.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from ravend.sim.topology_k8s import TokenIdentity

if TYPE_CHECKING:
    from ravend.sim.apiserver.server import SimApiServer


@dataclass(frozen=True)
class KubeconfigOut:
    """A kubeconfig the API server process writes once it knows its CA."""

    path: str
    token: str
    server_url: str


@dataclass(frozen=True)
class ApiServerSpec:
    host: str
    """Listen address inside the API namespace ("0.0.0.0": WAN and host link)."""
    port: int
    sans: list[str]
    """Extra certificate SANs: the WAN address and the host-link address."""
    ready_file: str
    """Created after the server listens and every kubeconfig is written."""
    state_dir: str
    """Where the server keeps its CA, so a restarted server keeps the nodes' trust."""
    identities: list[TokenIdentity] = field(default_factory=list)
    kubeconfigs: list[KubeconfigOut] = field(default_factory=list)
    webhook_addresses: list[str] = field(default_factory=list)
    """Agents whose webhooks (port 10266) the server calls once one answers; empty: built-in
    conversion and no validating webhook."""
    webhooks_ready_file: str = ""
    """Written (with the chosen address) once the webhooks are registered."""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> ApiServerSpec:
        data = json.loads(path.read_text())
        data["identities"] = [
            TokenIdentity(i["token"], i["user"], tuple(i["groups"]), i["extra"])
            for i in data["identities"]
        ]
        data["kubeconfigs"] = [KubeconfigOut(**k) for k in data["kubeconfigs"]]
        return cls(**data)


async def serve_main(argv: list[str]) -> int:
    """Entry of the API server process: serve until SIGTERM/SIGINT."""
    from ravend.sim.apiserver.server import SimApiServer

    spec = ApiServerSpec.read(Path(argv[0]))
    server = SimApiServer(
        host=spec.host, port=spec.port, extra_sans=spec.sans, state_dir=Path(spec.state_dir)
    )
    for ident in spec.identities:
        server.add_identity(ident.token, ident.user, list(ident.groups), ident.extra)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server, asyncio.TaskGroup() as tg:
        _write_kubeconfigs(server, spec)
        hooks = tg.create_task(_follow_webhooks(server, spec), name="sim-webhooks")
        await stop.wait()
        hooks.cancel()
    return 0


async def _follow_webhooks(server: SimApiServer, spec: ApiServerSpec) -> None:
    """Call the agents' webhooks once one answers (a no-op without webhook addresses)."""
    from ravend.sim.cluster_webhooks import WebhookTargets, follow_webhooks, touch_when_registered

    if not spec.webhook_addresses:
        return
    ready = Path(spec.webhooks_ready_file) if spec.webhooks_ready_file else None
    await follow_webhooks(
        server,
        WebhookTargets(tuple(spec.webhook_addresses)),
        on_registered=touch_when_registered(ready) if ready else lambda _address: None,
    )


def _write_kubeconfigs(server: SimApiServer, spec: ApiServerSpec) -> None:
    for kc in spec.kubeconfigs:
        server.write_kubeconfig(Path(kc.path), kc.token, kc.server_url)
    Path(spec.ready_file).touch()  # last: the parent waits for it


@dataclass(frozen=True)
class AdminClient:
    """Just enough of a client to seed objects (the kube wrapper is for the agent)."""

    server: str
    token: str
    ssl_context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> AdminClient:
        cfg = yaml.safe_load(path.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(
            cluster["server"],
            cfg["users"][0]["user"]["token"],
            ssl.create_default_context(cadata=ca),
        )

    async def create_all(self, objects: list[tuple[str, dict[str, Any]]]) -> None:
        """POST each object; a Node's status is PUT afterwards, as a kubelet reports it."""
        headers = {"Authorization": f"Bearer {self.token}"}
        conn = aiohttp.TCPConnector(ssl=self.ssl_context)
        async with aiohttp.ClientSession(self.server, headers=headers, connector=conn) as http:
            for path, obj in objects:
                created = await _post(http, path, obj)
                if obj.get("kind") == "Node" and created is not None:
                    created["status"] = obj["status"]
                    name = obj["metadata"]["name"]
                    await _put_status(http, f"{path}/{name}/status", created)


async def _post(
    http: aiohttp.ClientSession, path: str, obj: dict[str, Any]
) -> dict[str, Any] | None:
    async with http.post(path, json=obj) as resp:
        if resp.status == 409:  # already there (a namespace the server pre-creates)
            return None
        if resp.status >= 300:
            raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")
        body: dict[str, Any] = await resp.json()
        return body


async def _put_status(http: aiohttp.ClientSession, path: str, obj: dict[str, Any]) -> None:
    async with http.put(path, json=obj) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"PUT {path}: {resp.status} {await resp.text()}")


if __name__ == "__main__":
    sys.exit(asyncio.run(serve_main(sys.argv[1:])))
