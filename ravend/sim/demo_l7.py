"""The demo's L7 round trips, run inside the cloud proxy node's namespace (network I/O).

`python -m ravend.sim.demo_l7 --front IP:PORT --ca-dir DIR NODE...` sends, for every node, the
requests the kube-apiserver sends for `kubectl logs` and `kubectl exec` (WebSocket
v5.channel.k8s.io) to the HTTPS front end, presenting a kubelet-client certificate minted from
the simulated cluster's CA (what the apiserver's --kubelet-client-certificate is), and prints
one JSON object per check. The parent turns them into demo records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from pathlib import Path

from ravend.certs.tls import client_context
from ravend.sim.apiserver.pki import ClusterCA
from ravend.sim.kubelet_client import KubeletClient, fixed_resolver

POD_NAMESPACE = "default"
CONTAINER = "main"
APISERVER_CN = "kube-apiserver-kubelet-client"


def demo_pod(node: str) -> str:
    """Name of the Pod object the demo schedules on `node` (front ends route pods by node)."""
    return f"demo-{node}"[:63]


def apiserver_context(ca_dir: Path) -> ssl.SSLContext:
    ca = ClusterCA.load_or_create(ca_dir)
    cert, key = ca.issue(
        APISERVER_CN, ["system:masters"], usages=["digital signature", "client auth"]
    )
    return client_context(ca.cert_pem, cert, key)


async def round_trips(client: KubeletClient, node: str) -> list[dict[str, object]]:
    pod = demo_pod(node)
    out: list[dict[str, object]] = []
    t0 = time.perf_counter()
    try:
        resp = await asyncio.wait_for(
            client.get(node, f"/containerLogs/{POD_NAMESPACE}/{pod}/{CONTAINER}?tailLines=3"), 10
        )
        ok = resp.status == 200 and resp.node == node and resp.body.count(b"\n") >= 1
        detail = f"HTTP {resp.status} from {resp.node}, {len(resp.body)} bytes"
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    out.append(
        {
            "node": node,
            "kind": "logs",
            "ok": ok,
            "detail": detail,
            "ms": (time.perf_counter() - t0) * 1000,
        }
    )
    t0 = time.perf_counter()
    payload = [b"hello ", node.encode()]
    try:
        path = f"/exec/{POD_NAMESPACE}/{pod}/{CONTAINER}?command=cat&input=1&output=1"
        stdout, status = await asyncio.wait_for(client.ws_exec_echo(node, path, payload), 10)
        ok = stdout == b"".join(payload) and b"Success" in status
        detail = f"echoed {len(stdout)} bytes, status {status.decode(errors='replace')[:40]}"
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    out.append(
        {
            "node": node,
            "kind": "exec",
            "ok": ok,
            "detail": detail,
            "ms": (time.perf_counter() - t0) * 1000,
        }
    )
    return out


async def _main(args: argparse.Namespace) -> None:
    host, port = args.front.rsplit(":", 1)
    client = KubeletClient(fixed_resolver(host, int(port)), apiserver_context(Path(args.ca_dir)))
    results = await asyncio.gather(*(round_trips(client, n) for n in args.nodes))
    for rec in (r for rs in results for r in rs):
        print(json.dumps(rec), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ravend.sim.demo_l7")
    p.add_argument("--front", required=True, help="HTTPS front end IP:PORT")
    p.add_argument("--ca-dir", required=True, help="directory with the cluster's ca.crt/ca.key")
    p.add_argument("nodes", nargs="+")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
