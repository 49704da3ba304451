"""The benchmarks (`make bench`) on a 10-API account, as a smoke test: every run they measure succeeds and every figure
is there. Timings are printed, never asserted; the AWS calls at the wire are asserted against the lower bounds the
report prints beside them."""

from __future__ import annotations

from benchmarks import (HANDOVERS, OPERATIONS, PERIODIC_IN_TICK, STAGES, ZIP_GOAL_BYTES, bench_targets, changes_bound, deployables,
                        full_sync_bound, idle_target_cost_per_month, metrics_read_bound, quiet_read_bound, render,
                        render_targets, run, task_binaries)
from lambda_adapter import load_timeouts

SMOKE_SIZE = 10


def test_the_benchmarks_measure_every_run_figure_and_binary_of_a_small_account():
    results, cold, zips = run([SMOKE_SIZE], release=False, cold_start_runs=1, log=lambda _: None)
    result = results[SMOKE_SIZE]
    assert list(result.operations) == list(OPERATIONS)
    operations = result.operations
    full, idle, metrics = operations["full sync"], operations["idle incremental"], operations["metrics read"]
    changes, again = operations["10 changes"], operations["10 changes again"]

    # Calls at the wire: the full sync and the metrics read are at their lower bounds, an idle run reads one page of
    # CloudTrail and nothing else, ten changes are read from API Gateway and CloudTrail once.
    assert full.service_calls("apigateway") == full_sync_bound(result.mix)
    assert (idle.service_calls("apigateway"), idle.service_calls("cloudtrail"), idle.service_calls("monitoring")) == (
        0, 1, 0)
    listings, fetches = metrics_read_bound(result.mix)
    assert (metrics.service_calls("monitoring", "ListMetrics"), metrics.service_calls("monitoring", "GetMetricData")) \
        == (listings, fetches)
    assert metrics.metrics_requested == len(STAGES) * (5 * result.mix["REST"] + 5 * result.mix["HTTP"]
                                                       + 6 * result.mix["WEBSOCKET"])
    assert metrics.service_calls("apigateway") == 0, "the metrics branch names APIs from the stored catalog"
    # Six 5-minute windows of the 30-minute fetch interval, per stage, each sent once.
    assert metrics.control_plane.get("POST /api/engine/{id}/runtimes/{id}/metrics") == 6 * len(STAGES)
    # Without traffic nothing is listed: every API-stage's request counters are probed, and nothing more is read.
    quiet = operations["quiet metrics read"]
    assert (quiet.service_calls("monitoring", "ListMetrics"), quiet.service_calls("monitoring", "GetMetricData")) \
        == quiet_read_bound(result.mix)
    assert quiet.metrics_requested == len(STAGES) * (result.mix["REST"] + result.mix["HTTP"]
                                                     + 2 * result.mix["WEBSOCKET"])
    assert quiet.control_plane.get("POST /api/engine/{id}/runtimes/{id}/metrics") == 7 * len(STAGES)
    assert len(result.changes) == 10 and changes.service_calls("cloudtrail") == 1
    assert changes.service_calls("apigateway") >= changes_bound(result.changes)
    # The run after them re-reads the changes in its window's overlap and skips them: applied once.
    assert (again.service_calls("apigateway"), again.service_calls("cloudtrail")) == (0, 1)
    assert again.control_plane == idle.control_plane, "the heartbeat only, as in an idle run"

    for operation in operations.values():
        assert 0 < operation.report.limits["historyEvents"] < 25_000
        assert operation.report.limits["stateTransitions"] > 0
        assert operation.dynamodb_units[0] > 0 and operation.control_plane_requests > 0
    # Every function the workflow invokes (the fan-out's own is not one).
    assert set(full.peak_rss) == set(task_binaries().values()) and all(rss > 1_000_000 for rss in full.peak_rss.values())
    assert {function: start.error_type for function, start in cold.items()} == {
        function: "InvalidInput" for function in load_timeouts()}
    assert all(0 < start.ready_ms[0] <= start.answered_ms[0] for start in cold.values())
    # `make test` builds the deployables before the end-to-end tests.
    assert zips == deployables() and set(zips) == set(load_timeouts()), "run `make lambdas` first"
    assert all(0 < zipped < size for size, zipped in zips.values())
    # The size goal holds for every deployable (the release profile in Cargo.toml is what keeps it).
    assert {f: zipped for f, (_, zipped) in zips.items() if zipped >= ZIP_GOAL_BYTES} == {}

    report = render(results, cold, zips, release=False, command="smoke")
    print(report)
    for heading in ("AWS calls per run", "Full sync at the API Gateway pace", "Control plane requests per run",
                    "## Tasks", "## Binaries", "Cost per month", "probed API-stage without traffic"):
        assert heading in report
    assert report.count(f"| {SMOKE_SIZE} | every ") == 2, "a cost row per schedule"


def test_the_fan_outs_benchmark_measures_each_targets_share_and_the_idle_cost():
    result = bench_targets(release=False, accounts=2, regions=("us-east-1", "eu-west-1"), log=lambda _: None)
    assert result.targets == 4 and list(result.operations) == ["first run: every target's full sync", "idle run"]
    for operation in result.operations.values():
        limits = operation.report.limits
        assert operation.report.output["failed"] == [] and limits["children"]["executions"] == 4
        assert limits["stateTransitions"] <= 3 + 4, "the fan-out's own share: a transition per target, three besides"
    first, idle = result.operations.values()
    # The member account's role is assumed once per function container that serves it, for all its regions and runs:
    # at most by every instance (cargo lambda watch runs 4 of each) of the three functions that read a target.
    assumed = first.service_calls("sts", "AssumeRole") + idle.service_calls("sts", "AssumeRole")
    assert 1 <= assumed <= 3 * 4, assumed
    assert idle.service_calls("apigateway") == 0 and idle.service_calls("cloudtrail") == 4, "one lookup per target"
    # The tick serves every quiet target in-process: no execution; when nothing is due, no API Gateway or
    # CloudWatch call and a CloudTrail lookup each; with every periodic read due, a listing and a metrics read each.
    idle_tick, periodic_tick = result.ticks["idle tick"], result.ticks["periodic tick"]
    assert idle_tick.per_target("cloudtrail") == 1 and idle_tick.per_target("apigateway") == 0
    assert idle_tick.per_target("monitoring") == 0
    assert periodic_tick.per_target("apigateway") >= 1 and periodic_tick.per_target("monitoring") >= 1
    cost = idle_target_cost_per_month(idle, idle_tick, periodic_tick, memory_mb=256)
    assert cost["transitions"] > 1 and cost["handovers"] == HANDOVERS and cost["periodic"] == PERIODIC_IN_TICK
    assert 0 < cost["handed_over"] < cost["total"] < cost["ungated"], cost
    rendered = "\n".join(render_targets(result, 256))
    print(rendered)
    assert "A quiet target's orchestration per month" in rendered and "every 1 min" in rendered
