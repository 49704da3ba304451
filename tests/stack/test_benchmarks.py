"""The benchmarks' arithmetic: account mixes, lower bounds, the vendor's calls, the month's runs and the cost of a run.
(tests/e2e/test_benchmark_smoke.py runs the benchmarks themselves on a small account.)"""

from __future__ import annotations

import json

import pytest
from moto.core.cbor import CBOREncoder

from benchmarks import (LARGEST, SQS_IDLE_RECEIVES_PER_HOUR, Operation, PushResult, account_mix, changes_bound,
                        full_sync_bound, idle_hour_costs, metric_data_queries, metrics_read_bound, path_template,
                        percentile, replace_section, run_cost, runs_per_month, task_binaries,
                        vendor_cloudwatch_per_month, vendor_per_run, zipped_size)
from stack import ExecutionReport


def test_accounts_keep_the_largest_regions_mix_of_api_types():
    assert account_mix(2520) == LARGEST
    assert account_mix(100) == {"REST": 52, "HTTP": 24, "WEBSOCKET": 24}
    assert account_mix(600) == {"REST": 314, "HTTP": 143, "WEBSOCKET": 143}
    assert all(sum(account_mix(n).values()) == n for n in (1, 7, 10, 99, 601))


def test_the_lower_bounds_are_the_largest_accounts_measured_figures():
    # make test-large measured these on the largest account: 2,528 API Gateway calls, 27 GetMetricData per stage.
    assert full_sync_bound(LARGEST) == 3 + 3 + 2 + 2520
    listings, fetches = metrics_read_bound(LARGEST)
    assert fetches == 2 * 27
    assert listings == 2 * (4 + 2 * 2), "per stage: 1,920 REST and HTTP Count series, 600 of each WebSocket metric"
    assert changes_bound(["create a", "delete b", "redeploy c"]) == 2 * 2 + 2


def test_the_vendor_agent_sees_25_rest_apis_at_most():
    assert vendor_per_run(LARGEST) == {"apigateway": 26, "cloudwatch": 7 * 25 * 2, "cloudtrail": 6, "seen": 25}
    assert vendor_per_run({"REST": 3, "HTTP": 4, "WEBSOCKET": 3})["apigateway"] == 4


def test_the_vendor_agent_pays_for_its_metrics_calls_on_every_run():
    assert vendor_cloudwatch_per_month(LARGEST, 1) == pytest.approx(350 * 43_200 * 0.01 / 1000)
    assert vendor_cloudwatch_per_month(LARGEST, 5) == pytest.approx(350 * 8_640 * 0.01 / 1000)


def test_a_month_is_a_full_sync_a_day_a_metrics_read_per_half_hour_and_idle_runs():
    assert runs_per_month(1) == {"full sync": 30, "metrics read": 1440, "idle incremental": 43_200 - 30 - 1440}
    assert runs_per_month(5) == {"full sync": 30, "metrics read": 1440, "idle incremental": 8640 - 30 - 1440}


def test_a_runs_cost_follows_its_transitions_task_time_metrics_and_capacity_units():
    states = [{"name": "EnsureRuntime", "status": "SUCCEEDED", "ms": 2000},
              {"name": "AssetsPublish", "status": "RETRIED", "attempt": 1},
              {"name": "AssetsPublish", "status": "SUCCEEDED", "ms": 1000},
              {"name": "Summary", "status": "SUCCEEDED", "ms": 1}]
    report = ExecutionReport("SUCCEEDED", {}, None, None, states, "", {"stateTransitions": 40})
    operation = Operation("metrics read", report, seconds=12.0, calls={("monitoring", "ListMetrics"): 6},
                          throttled=0, metrics_requested=1000, dynamodb_units=(100, 40), control_plane={}, peak_rss={})
    cost = run_cost(operation, memory_mb=256)
    assert cost.standard == pytest.approx(40 * 0.025 / 1000)
    assert cost.express == pytest.approx(1e-6 + 12.0 * 64 / 1024 * 0.00001667)
    assert cost.lambda_ == pytest.approx(2 * 0.2e-6 + 3.0 * 0.25 * 0.0000133334)
    assert cost.cloudwatch == pytest.approx((1000 + 6) * 0.01 / 1000)
    assert cost.dynamodb == pytest.approx(100 * 0.625e-6 + 40 * 0.125e-6)
    operation.seconds = 301
    assert run_cost(operation, memory_mb=256).express is None, "Express runs 5 minutes at most"


def test_every_task_state_of_the_definition_names_its_binary():
    tasks = task_binaries()
    assert tasks["EnsureRuntime"] == "ensure-runtime"
    assert {tasks[f"{branch}{task}"] for branch in ("Assets", "Metrics")
            for task in ("ListChanges", "Transform", "Publish", "AckWatermark", "ReleaseClaims")} == {
        "list-changes", "transform", "publish", "ack-watermark"}


def test_paths_name_their_ids_generically_and_zips_deflate(tmp_path):
    assert path_template("/api/assetcatalog/v1/runtimes/123_us_prod/apis/abc_dev?x=1") == \
        "/api/assetcatalog/{id}/runtimes/{id}/apis/{id}"
    binary = tmp_path / "bootstrap"
    binary.write_bytes(b"\0" * 100_000)
    assert 0 < zipped_size(binary) < 1000


def test_the_metrics_requested_are_counted_in_every_protocol_a_client_speaks():
    queries = [{"Id": f"q{i}", "MetricStat": {"Metric": {"MetricName": "Count"}, "Period": 60, "Stat": "Sum"}}
               for i in range(3)]
    cbor = CBOREncoder().encode({"MetricDataQueries": queries, "StartTime": 0, "EndTime": 60})  # the agent's SDK
    assert metric_data_queries(cbor) == 3
    assert metric_data_queries(json.dumps({"MetricDataQueries": queries}).encode()) == 3  # botocore
    form = "&".join(f"MetricDataQueries.member.{i}.Id=q{i}" for i in (1, 2, 3))  # awsQuery
    assert metric_data_queries(f"Action=GetMetricData&{form}".encode()) == 3
    assert metric_data_queries(b"") == 0


def test_push_latency_percentiles_are_nearest_rank():
    latencies = [float(n) for n in range(1, 61)]
    assert (percentile(latencies, 0.5), percentile(latencies, 0.95), percentile(latencies, 1.0)) == (30.0, 57.0, 60.0)
    assert percentile([42.0], 0.95) == 42.0


def test_an_idle_hour_with_push_reads_cloudtrail_four_times_and_pays_for_the_queues_polls():
    costs = idle_hour_costs(PushResult(tick_ms={"poll": 100.0, "push": 50.0}), memory_mb=1024)
    tick = lambda ms: 0.2 / 1e6 + ms / 1000 * 0.0000133334  # noqa: E731
    assert costs["poll"] == pytest.approx(60 * tick(100))
    assert costs["push ticks"] == pytest.approx(56 * tick(50) + 4 * tick(100))
    assert costs["push queue"] == pytest.approx(SQS_IDLE_RECEIVES_PER_HOUR * 0.40 / 1e6)


def test_the_push_section_is_replaced_in_place_or_appended():
    report = "# Benchmarks\n\n## A\n\na\n\n## Push mode\n\nold\n\n## B\n\nb\n"
    assert replace_section(report, "## Push mode", "## Push mode\n\nnew\n") == \
        "# Benchmarks\n\n## A\n\na\n\n## Push mode\n\nnew\n\n## B\n\nb\n"
    assert replace_section("# Benchmarks\n\n## A\n", "## Push mode", "## Push mode\n\nnew") == \
        "# Benchmarks\n\n## A\n\n## Push mode\n\nnew\n"
