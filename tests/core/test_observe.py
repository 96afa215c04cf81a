"""The observe server: /healthz always, /readyz follows readiness, /metrics is Prometheus text."""

import aiohttp

from ravend.observe.readiness import Readiness
from ravend.observe.server import ObserveServer


async def test_endpoints_follow_readiness() -> None:
    readiness = Readiness()
    readiness.require("informers")
    server = ObserveServer("127.0.0.1", 0, readiness)
    server.add_state("demo", lambda: {"answer": 42})
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                assert (await r.json())["waiting_for"] == ["informers"]
            readiness.mark("informers")
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert "ravend_ready 1.0" in await r.text()
            async with http.get(f"{base}/debug/state") as r:
                body = await r.json()
                assert body["demo"] == {"answer": 42}
    finally:
        await server.stop()
