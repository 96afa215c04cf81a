from __future__ import annotations

from kubernetes_asyncio import client


async def test_smoke(core: client.CoreV1Api) -> None:
    ns = await core.list_namespace()
    assert {n.metadata.name for n in ns.items} >= {"default", "kube-system"}
    node = await core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    assert node.metadata.uid
