"""End to end: metrics windows reach the control plane exactly once, in order, and only when
CloudWatch's answer is complete. The control plane's metrics POST is not idempotent."""

from __future__ import annotations

import time

import pytest

from conftest import metrics_window_end
from test_workflow import DEV, INTERVAL, PROD, TRAFFIC, seed


def windows_received(stack, runtime_id: str) -> list[int]:
    """The end (epoch seconds) of each window the control plane accepted for the runtime, in arrival order."""
    return [m["body"]["timestamp"] // 1000 for m in stack.apicp.state()["metrics"] if m["runtimeId"] == runtime_id]


def metrics_posts_to(runtime_id: str) -> str:
    return rf"/v2/runtimes/{runtime_id}/metrics$"


def windows_behind(stack, state_table, intervals: int, stages=("prod", "dev")) -> int:
    """Puts the stages' metrics watermark `intervals` windows before the latest the next run reads; returns it.
    Stages never synced are synced first (the metrics branch waits for a stage's first full sync)."""
    if any("assetsWatermark" not in state_table.item(stage) for stage in stages):
        # The first sync, whose metrics branch must send nothing: it may plan after the assets commit of the same
        # run, and windows it sent would arrive again once the watermark is set back below.
        for stage in stages:
            state_table.put_metrics_watermark(stage, int(time.time()) + 3600)
        assert stack.run().succeeded
    # The latest window due moves on when `now - CHANGE_BUFFER_SECONDS` (the assets watermark a run sets) passes a
    # window's end: a test starting just before that would see one window more than it put behind.
    until_next = INTERVAL - time.time() % INTERVAL
    if until_next < 90:
        time.sleep(until_next + 2)
        assert stack.run().succeeded  # the assets watermark past the boundary
    start = metrics_window_end(state_table, stages) - intervals * INTERVAL
    for stage in stages:
        state_table.put_metrics_watermark(stage, start)
    return start


def test_a_window_failing_once_is_retried_without_resending_the_one_before(clean, state_table):
    stack = clean
    seed(stack)
    start = windows_behind(stack, state_table, 2)
    # The control plane accepts prod's first window, then fails the second for one task attempt
    # (the client's three attempts of the request).
    stack.apicp.add_fault(metrics_posts_to(PROD), method="POST", status=503, skip=1, count=3)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.count("MetricsPublish", "RETRIED") == 1
    assert windows_received(stack, PROD) == [start + INTERVAL, start + 2 * INTERVAL], "the first one once only"
    assert windows_received(stack, DEV) == [start + INTERVAL, start + 2 * INTERVAL]
    assert state_table.item("prod")["metricsWatermark"] == start + 2 * INTERVAL


def test_after_a_failed_window_the_rerun_sends_every_window_once_in_order(clean, state_table):
    stack = clean
    seed(stack)
    start = windows_behind(stack, state_table, 3)
    # prod's second window fails on every attempt of this run (1 + 4 retries, 3 requests each).
    stack.apicp.add_fault(metrics_posts_to(PROD), method="POST", status=503, skip=1, count=15)

    failed = stack.run()

    assert not failed.succeeded
    # The chunk's own error after its retries, with the stage it held short.
    assert failed.error == "ControlPlaneUnavailable" and "stage prod" in failed.cause, failed.printed
    assert windows_received(stack, PROD) == [start + INTERVAL], "a failed window stops that runtime"
    assert windows_received(stack, DEV) == [start + INTERVAL, start + 2 * INTERVAL], "and not the others"
    prod = state_table.item("prod")
    assert prod["metricsWatermark"] == start + INTERVAL, "recorded up to the last accepted window"
    assert "metricsClaimedBy" not in prod

    rerun = stack.run()

    assert rerun.succeeded, rerun.printed
    expected = [start + INTERVAL, start + 2 * INTERVAL, start + 3 * INTERVAL]
    assert windows_received(stack, PROD) == expected, "each window once, oldest first"
    assert windows_received(stack, DEV) == expected


def test_a_partial_cloudwatch_answer_is_never_sent_as_zero_traffic(clean, state_table):
    stack = clean
    seed(stack)
    start = windows_behind(stack, state_table, 1, stages=("prod",))
    windows_behind(stack, state_table, 0, stages=("dev",))
    # Every GetMetricData answer of this run (the first attempt and both retries) says the data is
    # partial. CloudWatch signs its requests as "monitoring".
    stack.aws_proxy.add_rewrite("monitoring", "GetMetricData", "StatusCode", "Complete", "PartialData", count=3)

    waiting = stack.run()

    assert not waiting.succeeded
    assert waiting.error == "MetricsIncomplete", waiting.printed
    assert "PartialData" in waiting.cause and "stage prod" in waiting.cause, waiting.cause
    assert waiting.count("MetricsTransform", "RETRIED") == 2
    assert windows_received(stack, PROD) == [], "nothing sent rather than zero traffic"
    assert state_table.item("prod")["metricsWatermark"] == start

    complete = stack.run()

    assert complete.succeeded, complete.printed
    [report] = [m["body"] for m in stack.apicp.state()["metrics"] if m["runtimeId"] == PROD]
    assert report["timestamp"] == (start + INTERVAL) * 1000
    pets, orders = TRAFFIC["pets"][0], TRAFFIC["orders"][0]
    assert report["runtimeTransactionMetrics"]["apiMetrics"]["transactionCount"] == 5 * (pets + orders)


def test_after_an_outage_the_missed_windows_arrive_once_each_oldest_first(clean, state_table):
    stack = clean
    seed(stack)
    # An outage of three intervals: nothing ran since these watermarks.
    outage_start = windows_behind(stack, state_table, 3)

    first, second = stack.run(), stack.run()

    assert first.succeeded and second.succeeded, (first.printed, second.printed)
    # Two windows per run (METRICS_MAX_WINDOWS_PER_RUN in the test settings), then the last.
    assert windows_received(stack, PROD) == [outage_start + INTERVAL * i for i in (1, 2, 3)]
    totals = [m["body"]["runtimeTransactionMetrics"]["apiMetrics"]["transactionCount"]
              for m in stack.apicp.state()["metrics"] if m["runtimeId"] == PROD]
    assert totals == [5 * (TRAFFIC["pets"][0] + TRAFFIC["orders"][0])] * 3, "each window its own five minutes"
    # One GetMetricData call per stage and run, however many windows it covers: 2 stages, 2 runs.
    assert stack.aws_proxy.counts()[("monitoring", "GetMetricData")] == 4


def test_a_new_installation_starts_with_the_backfill_and_the_three_averages_mean_what_apicp_means(clean, state_table):
    stack = clean
    seed(stack)
    first = stack.run()
    assert first.succeeded, first.printed
    assert first.output["metrics"]["summary"]["windows"] == 0, "the metrics wait for the stages' first sync"
    latest = metrics_window_end(state_table)

    run = stack.run()

    assert run.succeeded, run.printed
    # METRICS_BACKFILL_SECONDS=600 in the test settings: the two windows before the latest end.
    assert windows_received(stack, PROD) == [latest - INTERVAL, latest]
    [first, _] = [m["body"] for m in stack.apicp.state()["metrics"] if m["runtimeId"] == PROD]
    pets = {m["apiName"]: m for m in first["apiTransactionMetricsList"]}["pets"]["apiMetrics"]
    count, _, _, latency, integration = TRAFFIC["pets"]
    assert pets["transactionCount"] == 5 * count
    assert pets["averageResponseTime"] == pytest.approx(latency), "API Gateway's Latency: what the client waits"
    assert pets["averageBackendResponseTime"] == pytest.approx(integration), "IntegrationLatency"
    assert pets["averageLatency"] == pytest.approx(latency - integration), "the gateway's own share"
