"""On demand (`make test-large`), on the strict local stack, printing their figures:

- a full sync of the largest account API Gateway allows in one region: 600 regional, 120 edge and
  600 private REST APIs (fixed quotas), each deployed to two stages, `STAGES=*`, at the default
  API Gateway pace. It must complete in one execution, inside every Lambda timeout, the 256 KiB
  payload limit and the 25,000 history events, without a single throttled API Gateway call;
- a metrics catch-up of 150 runtimes five hours behind, at the deployed metrics settings.
"""

from __future__ import annotations

import time

import pytest
from conftest import StateTable
from seed import create_rest_api, put_traffic, recent_minutes

from test_workflow import DEV, PROD, published

# API Gateway's fixed per-region quotas of REST APIs, by endpoint type.
LARGEST_ACCOUNT = {"REGIONAL": 600, "EDGE": 120, "PRIVATE": 600}


@pytest.mark.large
def test_a_full_sync_of_the_largest_account_fits_one_execution_and_every_limit(clean):
    stack = clean
    total = 0
    for endpoint_type, count in LARGEST_ACCOUNT.items():
        for i in range(count):
            create_rest_api(stack.moto_url, f"{endpoint_type.lower()}-{i:03}", {"team": f"t{i % 7}"},
                            {"prod": {"env": "production"}, "dev": {}}, endpoint_type=endpoint_type)
            total += 1

    started = time.monotonic()
    run = stack.run({"mode": "full"})
    seconds = time.monotonic() - started

    assert run.succeeded, run.printed[-3000:]
    assert len(published(stack)[PROD]) == len(published(stack)[DEV]) == total
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "apigateway"}
    throttled = sum(n for (service, _), n in stack.aws_proxy.throttled().items() if service == "apigateway")
    limits = run.limits
    print(f"\nlargest account: {total} REST APIs x 2 stages, full sync in {seconds:.0f} s")
    print(f"API Gateway calls: {calls} (total {sum(calls.values())}), throttled: {throttled}")
    print(f"largest state input: {limits['largestInput']}, largest output: {limits['largestOutput']}")
    print(f"history events: {limits['historyEvents']} of {limits['maxHistoryEvents']}")
    print(f"control plane requests: {len(stack.apicp.requests())}")
    assert throttled == 0
    assert limits["largestOutput"]["bytes"] < 200 * 1024 and limits["largestInput"]["bytes"] < 200 * 1024
    assert limits["historyEvents"] < 25_000
    # One listing of the account (a page per 500 APIs on AWS, where moto serves one; a GetStages
    # per API), made by the discovery and read back by the full sync.
    # No HTTP or WebSocket API (one empty GetApis), no custom domain name (one GetDomainNames).
    assert set(calls) == {"GetRestApis", "GetStages", "GetApis", "GetDomainNames"} and calls["GetStages"] == total
    assert calls["GetApis"] == calls["GetDomainNames"] == 1
    assert calls["GetRestApis"] <= -(-total // 500)


# What a deployment runs with (the defaults of tasks/core/src/config.rs), not the e2e tests' small steps.
DEPLOYED_METRICS = {"METRICS_MAX_WINDOWS_PER_RUN": "60", "METRICS_FETCH_INTERVAL_SECONDS": "1800",
                    "METRICS_BACKFILL_SECONDS": "3600"}
RUNTIMES = 150


@pytest.mark.large
def test_a_metrics_catch_up_over_150_runtimes_fits_one_execution_far_below_the_history_limit(fresh_stack):
    stack = fresh_stack(DEPLOYED_METRICS)
    stages = [f"s{i:03}" for i in range(RUNTIMES)]
    create_rest_api(stack.moto_url, "shared", {"team": "core"}, {stage: {} for stage in stages})
    put_traffic(stack.moto_url, "shared", stages[0], recent_minutes(30), (10, 1, 0, 50.0, 20.0))
    # Five hours without a run: every runtime 60 windows of 5 minutes behind.
    latest = int((time.time() - 180) // 300 * 300)
    state_table = StateTable(stack.moto_url)
    for stage in stages:
        state_table.put_metrics_watermark(stage, latest - 60 * 300)

    started = time.monotonic()
    run = stack.run()
    seconds = time.monotonic() - started

    assert run.succeeded, run.printed[-3000:]
    metrics = stack.apicp.state()["metrics"]
    by_runtime: dict[str, list[int]] = {}
    for report in metrics:
        by_runtime.setdefault(report["runtimeId"], []).append(report["body"]["timestamp"] // 1000)
    expected = [latest - 60 * 300 + 300 * i for i in range(1, 61)]
    assert len(by_runtime) == RUNTIMES and all(ends == expected for ends in by_runtime.values())
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "monitoring"}
    limits = run.limits
    print(f"\nmetrics catch-up: {RUNTIMES} runtimes x 60 windows = {len(metrics)} reports in {seconds:.0f} s")
    print(f"CloudWatch calls: {calls}")
    print(f"largest state input: {limits['largestInput']}, largest output: {limits['largestOutput']}")
    print(f"history events: {limits['historyEvents']} of {limits['maxHistoryEvents']}")
    assert limits["historyEvents"] < 25_000 // 4
    assert limits["largestOutput"]["bytes"] < 200 * 1024 and limits["largestInput"]["bytes"] < 200 * 1024
