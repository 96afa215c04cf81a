"""Role selection (pure) and the runner that starts/stops role tasks at runtime."""

import asyncio
from types import MappingProxyType

from ravend.model import (
    GATEWAY_LABEL,
    ClusterView,
    Endpoint,
    EndpointType,
    ExposeType,
    Gateway,
    GatewaySpec,
    GatewayStatus,
    Node,
    ObjectMeta,
    RavenConfig,
)
from ravend.observe.readiness import Readiness
from ravend.roles import Role, RoleRunner, RoleSpec, adjust, readiness_key, wanted_roles


def _view(l3: bool, l7: bool, *, synced: bool = True) -> ClusterView:
    def node(name: str, gw: str) -> Node:
        return Node(ObjectMeta(name, labels={GATEWAY_LABEL: gw}), internal_ips=("10.0.0.1",))

    cloud = Gateway(
        ObjectMeta("gw-cloud"),
        GatewaySpec(expose_type=ExposeType.PUBLIC_IP),
        GatewayStatus(active_endpoints=(Endpoint("c1", EndpointType.PROXY, 10262),)),
    )
    edge = Gateway(
        ObjectMeta("gw-edge"),
        GatewaySpec(),
        GatewayStatus(active_endpoints=(Endpoint("e1", EndpointType.PROXY, 10262),)),
    )
    return ClusterView(
        gateways=MappingProxyType({"gw-cloud": cloud, "gw-edge": edge}),
        nodes=MappingProxyType(
            {"c1": node("c1", "gw-cloud"), "e1": node("e1", "gw-edge"), "e2": node("e2", "gw-edge")}
        ),
        raven_cfg=RavenConfig(l3_enabled=l3, l7_enabled=l7, present=True),
        synced=synced,
    )


def test_wanted_roles_by_position() -> None:
    view = _view(l3=True, l7=True)
    assert wanted_roles(view, "c1", leader=True) == {Role.CONTROLLER, Role.L3, Role.L7_SERVER}
    assert wanted_roles(view, "e1", leader=False) == {Role.L3, Role.L7_CLIENT}
    assert wanted_roles(view, "e2", leader=False) == {Role.L3}
    assert wanted_roles(view, "stranger", leader=False) == frozenset()


def test_toggles_remove_planes() -> None:
    assert wanted_roles(_view(l3=False, l7=True), "e2", leader=False) == frozenset()
    assert wanted_roles(_view(l3=True, l7=False), "e1", leader=False) == {Role.L3}


def test_unsynced_view_starts_nothing_but_controller() -> None:
    view = _view(l3=True, l7=True, synced=False)
    assert wanted_roles(view, "c1", leader=True) == {Role.CONTROLLER}


def test_adjust_stops_first_in_shutdown_order() -> None:
    stop, start = adjust(frozenset({Role.L3}), [Role.L7_SERVER, Role.CONTROLLER])
    assert stop == (Role.L7_SERVER, Role.CONTROLLER)
    assert start == (Role.L3,)
    assert adjust(frozenset({Role.L3}), [Role.L3]) == ((), ())


async def test_runner_starts_stops_and_cleans_up_on_disable() -> None:
    events: list[str] = []

    def spec(name: str) -> RoleSpec:
        async def run() -> None:
            events.append(f"start {name}")
            try:
                await asyncio.Event().wait()
            finally:
                events.append(f"stop {name}")

        async def cleanup() -> None:
            events.append(f"cleanup {name}")

        return RoleSpec(run, cleanup)

    readiness = Readiness()
    async with asyncio.TaskGroup() as tg:
        runner = RoleRunner({Role.L3: spec("l3"), Role.L7_CLIENT: spec("l7")}, tg, readiness)
        await runner.apply(frozenset({Role.L3, Role.L7_CLIENT}))
        await asyncio.sleep(0)
        assert runner.running == {Role.L3, Role.L7_CLIENT}
        assert not readiness.ready  # roles have not applied their state yet
        readiness.mark(readiness_key(Role.L3))
        readiness.mark(readiness_key(Role.L7_CLIENT))
        assert readiness.report()["ready"] is True
        await runner.apply(frozenset({Role.L3}))
        assert runner.running == {Role.L3}
        assert "cleanup l7" in events and "stop l7" in events
        await runner.stop_all()
        assert runner.running == frozenset()
    # Shutdown stops roles but never runs the disable cleanup (kernel state stays).
    assert "cleanup l3" not in events
    assert events.index("stop l7") < events.index("cleanup l7")


async def test_crashed_role_is_restarted_on_next_apply() -> None:
    starts = 0

    async def run() -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    async with asyncio.TaskGroup() as tg:
        runner = RoleRunner({Role.L3: RoleSpec(run)}, tg)
        await runner.apply(frozenset({Role.L3}))
        await asyncio.sleep(0.01)
        assert runner.running == frozenset()  # crashed, agent still alive
        await runner.apply(frozenset({Role.L3}))
        await asyncio.sleep(0.01)
        assert runner.running == {Role.L3} and starts == 2
        await runner.stop_all()
