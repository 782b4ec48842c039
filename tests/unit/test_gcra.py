"""GCRA as a client sees it: a burst at once, then a steady rate, honest headers, no drift."""

from __future__ import annotations

import pytest

from sidegate.policy.gcra import TICK, Decision, Gcra

NOW = 1_000.0


def run(gcra: Gcra, times: list[float], tat: float = 0.0, cost: int = 1) -> tuple[list[Decision], float]:
    """Decide one request at each of ``times``, carrying the TAT like a store would."""
    out = []
    for now in times:
        decision, tat = gcra.decide(tat, now, cost)
        out.append(decision)
    return out, tat


def allowed(decisions: list[Decision]) -> int:
    return sum(d.allowed for d in decisions)


def test_a_burst_of_the_limit_passes_at_once_then_requests_are_refused() -> None:
    decisions, _ = run(Gcra(5, 1.0), [NOW] * 8)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0, 0]
    assert {d.limit for d in decisions} == {5}


def test_burst_can_differ_from_the_rate() -> None:
    gcra = Gcra(10, 1.0, burst=3)  # 10/s sustained, but at most 3 at once
    decisions, tat = run(gcra, [NOW] * 5)
    assert allowed(decisions) == 3
    decisions, _ = run(gcra, [NOW + 0.1 * i for i in range(1, 11)], tat)
    assert allowed(decisions) == 10  # one every 100 ms keeps up with the rate


def test_after_the_burst_one_request_per_interval_passes() -> None:
    gcra = Gcra(10, 1.0)  # one every 100 ms
    _, tat = run(gcra, [NOW] * 10)
    early, _ = gcra.decide(tat, NOW + 0.099)
    assert not early.allowed
    on_time, tat = gcra.decide(tat, NOW + 0.1)
    assert on_time.allowed
    assert on_time.remaining == 0
    # Ten seconds of hammering every millisecond: exactly the rate, 100 requests.
    decisions, _ = run(gcra, [NOW + 0.1 + 0.001 * i for i in range(1, 10_001)], tat)
    assert allowed(decisions) == 100


def test_retry_after_says_when_the_request_would_pass() -> None:
    gcra = Gcra(2, 10.0)  # one every 5 s
    _, tat = run(gcra, [NOW, NOW + 1.0])
    refused, _ = gcra.decide(tat, NOW + 2.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(3.0, abs=2 * TICK)
    assert not gcra.decide(tat, NOW + 2.0 + refused.retry_after - 0.001)[0].allowed
    assert gcra.decide(tat, NOW + 2.0 + refused.retry_after)[0].allowed


def test_reset_after_says_when_the_full_burst_is_back() -> None:
    gcra = Gcra(4, 2.0)  # one every 0.5 s, burst 4
    decisions, tat = run(gcra, [NOW] * 3)
    assert decisions[-1].reset_after == pytest.approx(1.5)
    later, _ = gcra.decide(tat, NOW + 1.5)
    assert later.allowed
    assert later.remaining == 3  # back to the full burst (4), minus this one
    assert decisions[0].retry_after == 0.0


def test_a_refused_request_does_not_push_the_next_chance_back() -> None:
    gcra = Gcra(1, 1.0)
    _, tat = run(gcra, [NOW])
    decisions, tat_after = run(gcra, [NOW + 0.01 * i for i in range(1, 100)], tat)
    assert allowed(decisions) == 0
    assert tat_after == tat
    assert gcra.decide(tat, NOW + 1.0)[0].allowed


def test_cost_spends_several_units_and_a_refusal_spends_none() -> None:
    gcra = Gcra(10, 1.0)
    first, tat = gcra.decide(0.0, NOW, cost=4)
    assert (first.allowed, first.remaining) == (True, 6)
    second, tat = gcra.decide(tat, NOW, cost=5)
    assert (second.allowed, second.remaining) == (True, 1)
    too_big, same = gcra.decide(tat, NOW, cost=2)
    assert (too_big.allowed, too_big.remaining, same) == (False, 1, tat)
    assert too_big.retry_after == pytest.approx(0.1)
    last, _ = gcra.decide(tat, NOW, cost=1)
    assert (last.allowed, last.remaining) == (True, 0)


def test_cost_zero_reports_without_spending() -> None:
    gcra = Gcra(3, 1.0)
    _, tat = run(gcra, [NOW])
    peek, tat_after = gcra.decide(tat, NOW, cost=0)
    assert (peek.allowed, peek.remaining, tat_after) == (True, 2, tat)


def test_an_idle_key_gets_its_full_burst_back() -> None:
    gcra = Gcra(3, 1.0)
    _, tat = run(gcra, [NOW] * 3)
    decisions, _ = run(gcra, [NOW + 3600.0] * 4, tat)
    assert [d.allowed for d in decisions] == [True, True, True, False]


@pytest.mark.parametrize("now", [1_000.0, 1.7e9, 4.0e9], ids=["monotonic", "unix-time", "year-2096"])
@pytest.mark.parametrize(("requests", "per"), [(3, 1.0), (1000, 1.0), (7, 0.7), (10_000, 3600.0)])
def test_a_burst_is_exact_at_any_clock_magnitude(now: float, requests: int, per: float) -> None:
    """Intervals like 1/3 s are not exact in binary: the count must be exact anyway."""
    decisions, tat = run(Gcra(requests, per), [now] * (requests + 2))
    assert allowed(decisions) == requests
    assert [d.remaining for d in decisions[:3]] == [requests - 1, requests - 2, requests - 3]
    # No drift either: over 30 intervals of hammering (7 tries per interval), exactly 30 more pass.
    step = per / requests / 7
    decisions, _ = run(Gcra(requests, per), [now + step * (i + 0.5) for i in range(30 * 7 + 3)], tat)
    assert allowed(decisions) == 30


def test_nonsense_limits_are_refused_up_front() -> None:
    for args in [(0, 1.0), (5, 0.0), (5, -1.0), (5, float("inf")), (5, float("nan"))]:
        with pytest.raises(ValueError, match=r"requests|per"):
            Gcra(*args)
    with pytest.raises(ValueError, match="burst"):
        Gcra(5, 1.0, burst=0)
