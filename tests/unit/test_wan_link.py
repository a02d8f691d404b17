"""The WAN emulator's pure core: when a chunk leaves the link."""

from __future__ import annotations

import msgspec
import pytest

from trigreason.wan import LinkState, WanSettings, depart_at, one_way_delay_s


def test_a_chunk_leaves_after_half_the_round_trip() -> None:
    link, when = depart_at(LinkState(), WanSettings(rtt_ms=100), now=10.0, nbytes=1000, draw=0.5,
                           last_departure=0.0)  # fmt: skip
    assert when == pytest.approx(10.05)
    assert link == LinkState()  # no bandwidth cap: nothing is kept


def test_jitter_spreads_the_one_way_delay_by_half_its_width_each_side() -> None:
    s = WanSettings(rtt_ms=100, jitter_ms=40)
    assert one_way_delay_s(s, 0.0) == pytest.approx(0.040)
    assert one_way_delay_s(s, 0.5) == pytest.approx(0.050)
    assert one_way_delay_s(s, 0.999999) == pytest.approx(0.060, abs=1e-6)


def test_a_chunk_never_overtakes_the_one_before_it() -> None:
    s = WanSettings(rtt_ms=100, jitter_ms=100)
    _, first = depart_at(LinkState(), s, now=0.0, nbytes=10, draw=0.99, last_departure=0.0)
    _, second = depart_at(LinkState(), s, now=0.001, nbytes=10, draw=0.0, last_departure=first)
    assert second == first  # its own draw says 0.001 + 0.0, but the stream's order wins


def test_the_bandwidth_cap_serialises_chunks_on_the_shared_link() -> None:
    s = WanSettings(rtt_ms=0, mbit=8)  # 1 MB/s
    link, first = depart_at(LinkState(), s, now=0.0, nbytes=500_000, draw=0.5, last_departure=0.0)
    assert first == pytest.approx(0.5)
    # Another connection's chunk arriving meanwhile waits for the link, not for the first one's delay.
    link, second = depart_at(link, s, now=0.1, nbytes=250_000, draw=0.5, last_departure=0.0)
    assert second == pytest.approx(0.75)
    assert link.busy_until == pytest.approx(0.75)
    _, idle = depart_at(link, s, now=2.0, nbytes=1000, draw=0.5, last_departure=0.0)
    assert idle == pytest.approx(2.001)


@pytest.mark.parametrize(
    "bad",
    [{"rtt_ms": -1}, {"mbit": float("nan")}, {"rtt_ms": 10, "jitter_ms": 20}, {"partition_mode": "drop"}],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, WanSettings)
