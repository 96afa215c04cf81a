"""The embedded Kubernetes API server of the dev cluster (`ravend sim apiserver`).

An in-memory, HTTPS kube-apiserver for the subset ravend uses, faithful enough that the same
client code (kubernetes_asyncio) runs against it and against a real cluster:

- TLS from a generated cluster CA (EC P-256); bearer tokens and CA-signed client certificates
  (CN = user, O = groups) authenticate; anything else gets 401.
- core/v1 nodes, pods, configmaps, secrets, services, endpoints, events, namespaces;
  coordination.k8s.io/v1 leases; certificates.k8s.io/v1 CSRs (+ /approval, /status) with a
  signer for kubelet-serving, kube-apiserver-client and kube-apiserver-client-kubelet;
  raven.openyurt.io Gateways at v1beta1 (storage) and v1alpha1, validated against the CRD's own
  OpenAPI schema, converted by the built-in converter or a conversion webhook, optionally checked
  by a validating webhook.
- get, list (label/field selectors, limit/continue), watch (resume from a resourceVersion,
  bookmarks, 410 Expired outside the bounded event window), create, update (409 on a stale
  resourceVersion), JSON/merge/strategic-merge patch, delete (with preconditions), /status.
- One global resourceVersion counter, uid, creationTimestamp, generation for the CRD.
- Discovery (/api, /apis, group versions, /version) and kube-shaped Status errors.
- Fault hooks: 503 or refused connections, dropped or silenced watches, added latency.

What it does NOT implement: authorization (RBAC: every authenticated identity may do
anything), admission plugins other than the Gateway webhook (no LimitRanger, NamespaceLifecycle
beyond "namespace must exist", ServiceAccount...), finalizers and graceful deletion (delete is
immediate, no deletionTimestamp), garbage collection/ownerReferences cascading, server-side apply
(application/apply-patch+yaml gets 415), managedFields, deletecollection, field validation of
built-in types beyond names and CSRs, consistent snapshots for paginated lists (continue reads
current state), resourceVersionMatch, sendInitialEvents, protobuf, and persistence (only the CA
survives a restart, in state_dir).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from ravend.sim.apiserver.server import Faults, SimApiServer

__all__ = ["Faults", "SimApiServer", "main"]


async def main(argv: Sequence[str]) -> int:
    """`ravend sim apiserver --kubeconfig-out PATH [--host H --port P --san X --state-dir D]`."""
    parser = argparse.ArgumentParser(prog="ravend sim apiserver")
    parser.add_argument("--kubeconfig-out", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--san", action="append", default=[], help="extra IP/DNS name for the cert")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(list(argv))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # signals only set a flag
    async with SimApiServer(
        host=args.host, port=args.port, extra_sans=args.san, state_dir=args.state_dir
    ) as server:
        server.write_kubeconfig(args.kubeconfig_out)
        print(server.url, flush=True)
        await stop.wait()
    return 0
