"""The bench harness's own pure parts: percentiles, figures, targets, the results document.
The benchmark itself is not run here (``make bench`` does that)."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.product import E2ERun, GiveRun
from bench.run import FULL, QUICK
from bench.seed import EVENTS_PER_GIVEN_SLOT, EVENTS_PER_SLOT, slots
from bench.stats import (
    REQUIRED,
    TARGETS,
    Figure,
    Target,
    judge,
    missing_required,
    percentile,
    percentile_name,
    percentiles,
    rate,
    results_document,
    seconds_of_work,
)


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 100.0


def test_percentile_ignores_input_order() -> None:
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 25) == 2.0


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile([7.5], 99.9) == 7.5


def test_percentile_refuses_empty_samples_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1,
                max_size=200))
def test_percentiles_are_monotonic_and_within_the_samples(samples: list[float]) -> None:
    values = list(percentiles(samples).values())
    assert values == sorted(values)
    assert min(samples) <= values[0] and values[-1] <= max(samples)


def test_percentile_names_drop_the_decimal_point() -> None:
    assert list(percentiles([1.0, 2.0])) == ["p50", "p90", "p99", "p999"]
    assert percentile_name(99.9) == "p999"


def test_percentile_matches_numpy_linear_method_on_random_data() -> None:
    rng = random.Random(4)
    samples = [rng.expovariate(1.0) for _ in range(1001)]
    ordered = sorted(samples)
    # with 1001 samples the 99th percentile falls exactly on rank 990
    assert percentile(samples, 99) == ordered[990]


def test_ratio_is_value_over_baseline_and_none_without_one() -> None:
    assert Figure("give_throughput", 1500.0, "gives/s", 3000.0).ratio == 0.5
    assert Figure("give_p99_ms", 12.0, "ms").ratio is None
    assert Figure("x", 1.0, "u", 0.0).ratio is None


def test_a_ratio_target_passes_at_the_limit_and_fails_below() -> None:
    assert judge(Figure("give_throughput", 1800.0, "gives/s", 3000.0)).passed is True
    verdict = judge(Figure("give_throughput", 1799.0, "gives/s", 3000.0))
    assert verdict.passed is False
    assert verdict.missed == (Target("ratio", ">=", 0.6),)


def test_a_figure_without_baseline_fails_a_ratio_target() -> None:
    assert judge(Figure("ingest_throughput", 5000.0, "facts/s", None)).passed is False


def test_peak_rss_must_meet_both_its_value_and_its_ratio() -> None:
    assert judge(Figure("replay_peak_rss_mb", 250.0, "MB", 230.0)).passed is True
    growing = judge(Figure("replay_peak_rss_mb", 250.0, "MB", 150.0))
    assert growing.missed == (Target("ratio", "<=", 1.2),)
    big = judge(Figure("replay_peak_rss_mb", 320.0, "MB", 300.0))
    assert big.missed == (Target("value", "<=", 300.0),)


def test_value_targets_are_upper_bounds_for_latency() -> None:
    assert judge(Figure("give_p99_ms", 50.0, "ms")).passed is True
    assert judge(Figure("give_p99_ms", 50.1, "ms")).passed is False
    assert judge(Figure("e2e_p99_ms", 26.0, "ms", 1.5)).passed is False
    assert judge(Figure("give_end_lag_s", 1.0, "s")).passed is False  # under one second


def test_a_figure_without_target_has_no_verdict() -> None:
    assert judge(Figure("give_p50_ms", 3.0, "ms")).passed is None


def test_every_required_figure_has_a_target() -> None:
    assert set(REQUIRED) <= set(TARGETS)


def test_a_bad_target_is_refused() -> None:
    with pytest.raises(ValueError):
        Target("speed", ">=", 1.0)
    with pytest.raises(ValueError):
        Target("value", "=>", 1.0)


def test_results_document_has_exactly_the_issue_shape() -> None:
    figures = [Figure("give_throughput", 2100.0, "gives/s", 3500.0),
               Figure("give_p99_ms", 31.5, "ms")]
    document = results_document({"cpu_count": 2}, figures)
    assert set(document) == {"machine", "figures"}
    assert document["machine"] == {"cpu_count": 2}
    assert document["figures"]["give_throughput"] == {
        "value": 2100.0, "unit": "gives/s", "baseline": 3500.0, "ratio": 0.6}
    assert document["figures"]["give_p99_ms"] == {
        "value": 31.5, "unit": "ms", "baseline": None, "ratio": None}
    assert json.loads(json.dumps(document)) == document  # plain JSON, no NaN


def test_results_document_refuses_a_non_finite_value() -> None:
    with pytest.raises(ValueError):
        results_document({}, [Figure("give_p99_ms", math.nan, "ms")])


def test_missing_required_names_the_stages_that_produced_nothing() -> None:
    have = [Figure(name, 1.0, "u") for name in REQUIRED if name != "e2e_p99_ms"]
    assert missing_required(have) == ["e2e_p99_ms"]
    assert missing_required([Figure(n, 1.0, "u") for n in REQUIRED]) == []


def test_rates_and_seconds_of_work() -> None:
    assert rate(300, 2.0) == 150.0
    assert rate(5, 0.0) == 0.0
    assert seconds_of_work(500, 1000.0) == 0.5
    assert seconds_of_work(0, 0.0) == 0.0
    assert seconds_of_work(10, 0.0) == math.inf


def test_quick_sizes_are_smaller_than_the_issue_sizes() -> None:
    assert FULL.ingest_facts == 200_000 and FULL.replay_events == 1_000_000
    assert FULL.give_concurrency == 32 and FULL.give_seconds == 30
    assert QUICK.ingest_facts < FULL.ingest_facts
    assert QUICK.replay_events < FULL.replay_events
    assert QUICK.give_seconds < FULL.give_seconds


def test_seed_slots_record_the_events_the_harness_counts_on() -> None:
    built = list(slots("t", 0, 3, given_every=2))
    counts = [sum(len(a.collect_events()) for a in aggregates) for _, aggregates in built]
    # slot 0 is given and also registers its stock item (2 events); slot 1 is pending
    assert counts == [EVENTS_PER_GIVEN_SLOT + 2, EVENTS_PER_SLOT, EVENTS_PER_GIVEN_SLOT]
    slot, aggregates = built[1]
    request = aggregates[2]
    assert slot.request_id == str(request.id)
    assert slot.to_order_id == "t-b1"


def test_profile_summary_counts_self_and_inclusive_samples() -> None:
    from bench.profile_summary import frame_name, render, summarise

    lines = [
        "main (a/cli.py:10);execute (handlers/commands.py:60);wait (psycopg/connection.py:495) 6\n",
        "main (a/cli.py:10);execute (handlers/commands.py:61);encode (json/encoder.py:3) 3\n",
        "main (a/cli.py:10);select (selectors.py:468) 11\n",  # idle: left out by default
        "not a stack line\n",
    ]
    summary = summarise(lines)
    assert summary.total == 9
    assert summary.self_samples["wait (psycopg/connection.py)"] == 6
    assert summary.inclusive["execute (handlers/commands.py)"] == 9  # lines merged
    assert summarise(lines, idle=True).total == 20
    assert summarise(lines, under="encode").total == 3
    assert frame_name("f (/x/y/z.py:1)") == "f (y/z.py)"
    assert "66.7%  wait (psycopg/connection.py)" in render(summary, 5)


def test_an_e2e_runs_latencies_are_picked_by_when_the_give_was_answered() -> None:
    run = E2ERun(GiveRun(concurrency=0), [(0.5, 0.004), (4.9, 0.006), (5.0, 0.030),
                                          (19.0, 0.050)], missing=0)
    assert run.latencies == [0.004, 0.006, 0.030, 0.050]
    assert run.latencies_answered_within(0.0, 5.0) == [0.004, 0.006]
    assert run.latencies_answered_within(15.0, 20.0) == [0.050]
    assert run.latencies_answered_within(20.0, 25.0) == []
