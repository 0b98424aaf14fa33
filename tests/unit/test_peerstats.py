"""The peer benchmark's pure parts: containerd's event lines, the lifecycle intervals, pairwise ratios."""

from benchmarks.peerstats import rows
from benchmarks.results import PeerSample
from testbed.events import intervals, parse

LINE = ('2026-12-03 07:15:33.710121747 +0000 UTC peer /containers/create '
        '{"id":"c1","runtime":{"name":"io.containerd.runc.v2"}}')


def test_an_event_line_of_ctr_events_is_read_with_containerds_clock() -> None:
    e = parse(LINE)
    assert e is not None and (e.namespace, e.topic, e.names("c1"), e.names("c2")) == (
        "peer", "/containers/create", True, False)
    assert abs(e.at - 1796282133.710121747) < 1e-6
    assert parse("not an event") is None and parse("2026-12-03 x +0000 UTC n /t {}") is None


def test_intervals_pair_the_first_event_of_each_topic() -> None:
    lines = [f"2026-12-03 07:00:00.{ms:03d}000000 +0000 UTC ns {topic} {{\"container_id\":\"c\"}}"
             for ms, topic in ((100, "/containers/create"), (400, "/tasks/create"), (450, "/tasks/start"),
                               (700, "/tasks/exit"), (990, "/containers/delete"))]
    events = [e for line in lines if (e := parse(line)) is not None]
    got = intervals(events)
    assert {k: round(v) for k, v in got.items()} == {"create": 300, "start": 50, "delete": 290}
    assert intervals(events[:2]) == {"create": intervals(events)["create"]}  # a missing event leaves one out


def _sample(runtime: str, index: int, ms: float, ok: bool = True) -> PeerSample:
    return PeerSample("1.7", "rm", "solo5-spt", runtime, index, ms, ok, True, {})


def test_a_ratio_is_the_median_of_pairwise_ratios_and_the_first_container_stands_apart() -> None:
    samples = [_sample("ukrun", 0, 900), _sample("urunc", 0, 300), _sample("runc", 0, 100)]
    for i, (u, p) in enumerate(((100, 200), (300, 200), (500, 100)), start=1):  # ratios 0.5, 1.5, 5
        samples += [_sample("ukrun", i, u), _sample("urunc", i, p), _sample("runc", i, 100 * i, ok=i != 2)]
    samples += [_sample("ukrun", 4, 1), _sample("urunc", 4, 180000, ok=False)]  # a hung peer: in no ratio
    (row,) = rows(samples)
    assert row.ratio_urunc == 1.5  # not 300 / 200, the ratio of the medians
    assert row.first == {"ukrun": 900, "urunc": 300, "runc": 100} and row.ratio_urunc_first == 3.0
    assert row.later["ukrun"] == 200 and row.later["runc"] == 200 and row.failures == {"runc": 1, "urunc": 1}
    assert row.ratio_runc is not None and abs(row.ratio_runc - (1 + 5 / 3) / 2) < 1e-9  # rounds 1 and 3 only


def test_the_headline_names_each_containerd_and_the_helpers_ratio() -> None:
    from benchmarks.peerpage import headline
    from benchmarks.peerstats import HELPED
    from benchmarks.results import PeerResult

    samples = []
    for version, helped in (("1.7", 150), ("2", 250)):
        for i in range(3):
            samples += [PeerSample(version, "rm", "solo5-spt", runtime, i, ms, True, True, {})
                        for runtime, ms in (("ukrun", 300), (HELPED, helped), ("urunc", 200), ("runc", 100))]
    (line,) = headline(PeerResult("cmd", "0.5.0", 3, {"solo5-spt": "Solo5 on spt"}, samples))
    assert "containerd 1.7: Solo5 on spt 1.50 (0.75 with its helper); containerd 2: Solo5 on spt 1.50 (1.25" in line
