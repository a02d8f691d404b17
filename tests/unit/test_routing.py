"""The replica choice (rendezvous order, bounded load, ejection and readmission): pure and synchronous."""

from __future__ import annotations

import collections

import pytest

from trigreason.proto import ConfigError
from trigreason.services.worker.backends import Router, RouterSettings, parse_backend_url, rendezvous_order

A, B, C, D = "http://a:80", "http://b:80", "http://c:80", "http://d:80"


def _router(*replicas: str, **settings: object) -> Router:
    router = Router(RouterSettings(**settings))  # type: ignore[arg-type]
    router.set_replicas(replicas)
    return router


def _key_for(first: str, replicas: list[str]) -> str:
    """A session id whose first replica is ``first``."""
    return next(k for k in (f"s{i}" for i in range(1000)) if rendezvous_order(k, replicas)[0] == first)


# -- the order ---------------------------------------------------------------------------------------------


def test_order_is_a_permutation_and_stable_whatever_the_input_order() -> None:
    order = rendezvous_order("session-1", [A, B, C, D])
    assert sorted(order) == [A, B, C, D]
    assert rendezvous_order("session-1", [D, C, B, A]) == order


def test_order_is_the_same_in_another_process() -> None:
    # blake2b, not hash(): pinned values, so a change of hash (or PYTHONHASHSEED) would show here.
    assert rendezvous_order("s-0", [A, B, C]) == rendezvous_order("s-0", (C, A, B))
    assert rendezvous_order("abc", ["x", "y"]) == sorted(
        ["x", "y"],
        key=lambda r: __import__("hashlib").blake2b(f"{r}\x00abc".encode(), digest_size=8).digest(),
        reverse=True,
    )


def test_sessions_spread_about_evenly() -> None:
    firsts = collections.Counter(rendezvous_order(f"session-{i}", [A, B, C, D])[0] for i in range(4000))
    assert set(firsts) == {A, B, C, D}
    assert all(800 < n < 1200 for n in firsts.values()), firsts


def test_removing_a_replica_moves_only_its_sessions() -> None:
    keys = [f"session-{i}" for i in range(2000)]
    before = {k: rendezvous_order(k, [A, B, C, D])[0] for k in keys}
    after = {k: rendezvous_order(k, [A, B, D])[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved
    assert all(before[k] == C for k in moved)
    # ... each to its second choice, as the first order said.
    assert all(after[k] == rendezvous_order(k, [A, B, C, D])[1] for k in moved)


# -- choosing ----------------------------------------------------------------------------------------------


def test_a_session_keeps_its_replica() -> None:
    router = _router(A, B, C)
    key = _key_for(B, [A, B, C])
    for t in range(5):
        choice = router.choose(key, float(t))
        router.started(choice.replica)
        router.finished(choice.replica, float(t))
        assert (choice.replica, choice.first, choice.reason) == (B, B, None)


@pytest.mark.parametrize(
    ("in_flight", "load_factor", "expected", "reason"),
    [
        ({}, 1.25, "first", None),  # idle: its own replica
        ({"first": 1}, 1.25, "first", None),  # bound ceil(1.25 * 2 / 2) = 2: still room
        ({"first": 2}, 1.25, "second", "saturated"),  # bound ceil(1.25 * 3 / 2) = 2: full
        ({"first": 2, "second": 2}, 1.25, "first", None),  # bound ceil(1.25 * 5 / 2) = 4
        ({"first": 1}, 1.0, "second", "saturated"),  # bound ceil(1 * 2 / 2) = 1
        ({"first": 3, "second": 3}, 1.0, "first", None),  # both at the bound ceil(7 / 2) = 4 - 1: first
        ({"first": 4, "second": 3}, 1.0, "second", "saturated"),  # 4 >= bound 4: least loaded
    ],
)
def test_bounded_load(
    in_flight: dict[str, int], load_factor: float, expected: str, reason: str | None
) -> None:
    router = _router(A, B, load_factor=load_factor)
    key = _key_for(A, [A, B])
    names = {"first": A, "second": B}
    for which, n in in_flight.items():
        for _ in range(n):
            router.started(names[which])
    choice = router.choose(key, 0.0)
    assert choice.replica == names[expected]
    assert choice.first == A
    assert choice.reason == reason


def test_round_robin_ignores_the_session() -> None:
    router = _router(A, B, C, mode="round-robin")
    picks = [router.choose("same-session", 0.0).replica for _ in range(6)]
    assert picks == [A, B, C, A, B, C]


def test_a_step_that_failed_on_a_replica_goes_to_the_next_in_order() -> None:
    router = _router(A, B, C)
    key = _key_for(A, [A, B, C])
    second = rendezvous_order(key, [A, B, C])[1]
    router.started(A)
    router.finished(A, 0.0, "error")
    choice = router.choose(key, 0.0, exclude=[A])
    assert (choice.replica, choice.reason) == (second, "failed")
    # Every replica failed this call: still a replica (the session's first), never an exception.
    assert router.choose(key, 0.0, exclude=[A, B, C]).replica == A


# -- health ------------------------------------------------------------------------------------------------


def test_ejection_after_consecutive_failures_and_readmission_by_probe() -> None:
    router = _router(A, B, eject_after=2, eject_s=5.0)
    key = _key_for(A, [A, B])
    router.started(A)
    assert router.finished(A, 0.0, "error") is False  # one failure: still in
    assert router.choose(key, 0.0).replica == A
    router.started(A)
    assert router.finished(A, 1.0, "error") is True  # the second ejects
    choice = router.choose(key, 2.0)
    assert (choice.replica, choice.first, choice.reason) == (B, A, "ejected")
    assert router.probed(A, 3.0, ok=True) is True  # readmitted: the session moves back
    assert router.choose(key, 3.0) == router.choose(key, 3.0)
    assert router.choose(key, 3.0).replica == A


def test_a_success_resets_the_failure_count() -> None:
    router = _router(A, B, eject_after=2)
    for t in range(4):  # error, success, error, success: never two in a row
        router.started(A)
        assert router.finished(A, float(t), "error" if t % 2 == 0 else None) is False
    assert not router.ejected(A, 10.0)


def test_ejection_backs_off_while_probes_fail_and_runs_out_half_open() -> None:
    router = _router(A, B, eject_after=1, eject_s=5.0, eject_max_s=12.0)
    router.started(A)
    router.finished(A, 0.0, "error")
    assert router.ejected(A, 4.9)
    assert not router.ejected(A, 5.1)
    assert router.probed(A, 5.1, ok=False) is False
    assert router.ejected(A, 5.1 + 9.9)
    assert not router.ejected(A, 5.1 + 10.1)
    router.probed(A, 20.0, ok=False)
    assert router.ejected(A, 20.0 + 11.9)
    assert not router.ejected(A, 20.0 + 12.1)
    # Run out: calls may try it again (half-open); a good call readmits it for good.
    router.started(A)
    router.finished(A, 40.0)
    assert router.probed(A, 41.0, ok=True) is None  # nothing left to change


def test_a_429_pauses_the_replica_without_ejecting_it() -> None:
    router = _router(A, B)
    key = _key_for(A, [A, B])
    router.started(A)
    assert router.finished(A, 0.0, "overloaded", retry_after_s=2.0) is False
    choice = router.choose(key, 1.0)
    assert (choice.replica, choice.reason) == (B, "overloaded")
    assert router.choose(key, 2.5).replica == A
    assert not router.ejected(A, 1.0)


def test_replica_set_changes_keep_the_states_of_replicas_kept() -> None:
    router = _router(A, B, eject_after=1)
    router.started(A)
    router.finished(A, 0.0, "error")
    added, removed = router.set_replicas([A, C])
    assert (added, removed) == ([C], [B])
    assert router.ejected(A, 1.0)
    assert router.replicas == [A, C]
    router.finished(B, 1.0, "error")  # a call on a removed replica ends: ignored
    with pytest.raises(LookupError):
        _router().choose("s", 0.0)


def test_two_routers_agree_without_talking() -> None:
    # Two worker replicas, each with its own router: the same session goes to the same replica.
    one, two = _router(A, B, C, D), _router(D, C, B, A)
    for i in range(50):
        assert one.choose(f"s{i}", 0.0).replica == two.choose(f"s{i}", 0.0).replica


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "random"}, "routing mode"),
        ({"load_factor": 0.5}, "load_factor"),
        ({"eject_after": 0}, "eject_after"),
        ({"eject_s": 0.0}, "eject_s"),
    ],
)
def test_bad_router_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouterSettings(**settings)  # type: ignore[arg-type]


# -- URLs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "urls", "dns"),
    [
        ("http://a:80", ("http://a:80",), None),
        ("http://a:80/, http://b:80", ("http://a:80", "http://b:80"), None),
        ("http://a:80,http://a:80", ("http://a:80",), None),
        (
            "dns+http://tgi-srm.ns.svc.cluster.local:8080",
            (),
            ("http", "tgi-srm.ns.svc.cluster.local", 8080, ""),
        ),
        ("dns+https://vllm:8443/v1/", (), ("https", "vllm", 8443, "/v1")),
        ("dns+http://tgi", (), ("http", "tgi", 80, "")),
    ],
)
def test_backend_urls(spec: str, urls: tuple[str, ...], dns: tuple[str, str, int, str] | None) -> None:
    source = parse_backend_url(spec)
    assert (source.urls, source.dns) == (urls, dns)
    assert (source.single is not None) == (len(urls) == 1)


@pytest.mark.parametrize(
    "spec", ["", "a:80", "http://a:80,ftp://b", "dns+http://a:80,http://b:80", "dns+ftp://a", "dns+http://"]
)
def test_bad_backend_urls(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_backend_url(spec)
