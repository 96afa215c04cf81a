"""Label selector parser: hypothesis properties against a reference model, plus table cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ravend.sim.apiserver.selectors import Requirement, parse_label_selector

NAME = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?", fullmatch=True)
KEY = st.one_of(
    NAME,
    st.builds(
        lambda p, n: f"{p}/{n}",
        st.from_regex(r"[a-z0-9]{1,8}(\.[a-z]{1,4})?", fullmatch=True),
        NAME,
    ),
)
VALUE = st.one_of(st.just(""), NAME)


@st.composite
def requirement(draw: st.DrawFn) -> tuple[str, Requirement]:
    key = draw(KEY)
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if op in ("exists", "!"):
        return (key if op == "exists" else f"!{key}"), Requirement(key, op)
    if op in ("in", "notin"):
        values = draw(st.lists(VALUE, min_size=1, max_size=4))
        return f"{key} {op} ({', '.join(values)})", Requirement(key, op, tuple(sorted(set(values))))
    value = draw(VALUE)
    return f"{key}{op}{value}", Requirement(key, "notin" if op == "!=" else "in", (value,))


def reference(req: Requirement, labels: dict[str, str]) -> bool:
    """Kubernetes semantics, written independently of the implementation."""
    if req.op == "exists":
        return req.key in labels
    if req.op == "!":
        return req.key not in labels
    if req.op == "in":
        return req.key in labels and labels[req.key] in req.values
    return req.key not in labels or labels[req.key] not in req.values


@given(st.lists(requirement(), min_size=1, max_size=5))
def test_parse_round_trips_requirements(reqs: list[tuple[str, Requirement]]) -> None:
    text = ",".join(t for t, _ in reqs)
    assert parse_label_selector(text).requirements == tuple(r for _, r in reqs)


@given(st.lists(requirement(), min_size=1, max_size=4), st.dictionaries(KEY, VALUE, max_size=5))
def test_matching_is_the_conjunction_of_requirements(
    reqs: list[tuple[str, Requirement]], labels: dict[str, str]
) -> None:
    # Make some requirement keys present so both branches get exercised.
    for _, r in reqs[:1]:
        labels.setdefault(r.key, r.values[0] if r.values else "x")
    sel = parse_label_selector(",".join(t for t, _ in reqs))
    assert sel.matches(labels) == all(reference(r, labels) for _, r in reqs)


@given(st.lists(requirement(), min_size=1, max_size=4))
def test_whitespace_around_tokens_is_ignored(reqs: list[tuple[str, Requirement]]) -> None:
    spaced = " , ".join(f" {t} " for t, _ in reqs)
    assert parse_label_selector(spaced) == parse_label_selector(",".join(t for t, _ in reqs))


@pytest.mark.parametrize(
    "bad", ["a b", "=v", "k in (a", "k=a b", "Bad Key", "k=-bad-", "a/b/c", "k in ()x"]
)
def test_bad_selectors_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_label_selector(bad)


def test_gt_lt_need_integers() -> None:
    assert parse_label_selector("n>3").matches({"n": "4"})
    assert not parse_label_selector("n<3").matches({"n": "4"})
    with pytest.raises(ValueError):
        parse_label_selector("n>x")


def test_empty_selector_matches_everything() -> None:
    assert parse_label_selector("").matches({})
