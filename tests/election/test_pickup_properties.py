"""Properties of the pure pickup over random pools (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ravend.election.examples import ep, gateway, node, view
from ravend.election.health import HealthView
from ravend.election.pickup import elect
from ravend.model import ClusterView, Endpoint, EndpointType

NAMES = ["a", "b", "c", "d", "e"]
KINDS = [EndpointType.PROXY, EndpointType.TUNNEL]

candidates = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(KINDS)), unique=True, max_size=8
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ClusterView, frozenset[str]]:
    eps = [ep(n, k) for n, k in draw(candidates)]
    active = [ep(n, k) for n, k in draw(candidates)]
    members = draw(st.sets(st.sampled_from(NAMES)))
    down = draw(st.frozensets(st.sampled_from(NAMES)))
    gw = gateway(
        "gw",
        eps,
        proxy_replicas=draw(st.integers(0, 3)),
        tunnel_replicas=draw(st.integers(0, 3)),
        active=active,
    )
    v = view([gw], [node(n, "gw") for n in members], l3=draw(st.booleans()), l7=draw(st.booleans()))
    return v, down


def settle(v: ClusterView, down: frozenset[str]) -> tuple[ClusterView, tuple[Endpoint, ...]]:
    status = elect(v, HealthView(not_ready=down), 0.0).statuses.get("gw", v.gateways["gw"].status)
    gw = replace(v.gateways["gw"], status=status)
    return replace(v, gateways={"gw": gw}), status.active_endpoints


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_slots_health_membership_and_order(scenario: tuple[ClusterView, frozenset[str]]) -> None:
    v, down = scenario
    gw = v.gateways["gw"]
    _, active = settle(v, down)
    cfg = v.raven_cfg
    for kind, replicas, on in (
        (EndpointType.PROXY, gw.spec.proxy_config.replicas, cfg.l7_enabled),
        (EndpointType.TUNNEL, gw.spec.tunnel_config.replicas, cfg.l3_enabled),
    ):
        of_kind = [e for e in active if e.type == kind]
        assert len(of_kind) <= (replicas if on else 0)  # never more than the slots
        assert len({e.node_name for e in of_kind}) == len(of_kind)
        healthy = [
            e for e in gw.spec.endpoints
            if e.type == kind and e.node_name in v.nodes and e.node_name not in down
        ]  # fmt: skip
        if on:  # every free slot is filled when a healthy candidate is left
            assert len(of_kind) == min(replicas, len(healthy))
    for e in active:
        assert e.node_name in v.nodes and e.node_name not in down
        assert any(s.key == e.key for s in gw.spec.endpoints)
    assert [e.key for e in active] == sorted(e.key for e in active)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_idempotent_and_sticky(scenario: tuple[ClusterView, frozenset[str]]) -> None:
    v, down = scenario
    settled, active = settle(v, down)
    # Electing again from the written status changes nothing (status written only on change).
    assert dict(elect(settled, HealthView(not_ready=down), 0.0).statuses) == {}
    # Nodes recovering never displace a healthy holder.
    _, after = settle(settled, frozenset())
    assert {e.key for e in active} <= {e.key for e in after}
