"""On demand (`make test-large`), on the strict local stack, printing their figures:

- a full sync of the largest account API Gateway allows in one region: 600 regional, 120 edge and
  600 private REST APIs, 600 HTTP and 600 WebSocket APIs (fixed quotas), each deployed to two
  stages, `STAGES=*`, at the default API Gateway pace. It must complete in one execution, inside
  every Lambda timeout, the 256 KiB payload limit and the 25,000 history events, without a single
  throttled API Gateway call, every listing paged as AWS pages it (tests/stack/listing_pages.py);
- a metrics catch-up of 150 runtimes five hours behind, at the deployed metrics settings.
"""

from __future__ import annotations

import time

import pytest
from conftest import StateTable
from seed import create_rest_api, create_v2_api, put_steady_traffic, put_traffic, recent_minutes

from test_workflow import DEV, INTERVAL, PROD, latest_window_end, published

# API Gateway's fixed per-region quotas of REST APIs, by endpoint type, and of HTTP and WebSocket APIs.
LARGEST_ACCOUNT = {"REGIONAL": 600, "EDGE": 120, "PRIVATE": 600}
LARGEST_V2 = {"HTTP": 600, "WEBSOCKET": 600}


@pytest.mark.large
def test_the_largest_account_fits_one_execution_and_every_limit(clean, state_table):
    stack = clean
    rest_names = []
    for endpoint_type, count in LARGEST_ACCOUNT.items():
        for i in range(count):
            rest_names.append(f"{endpoint_type.lower()}-{i:03}")
            create_rest_api(stack.moto_url, rest_names[-1], {"team": f"t{i % 7}"},
                            {"prod": {"env": "production"}, "dev": {}}, endpoint_type=endpoint_type)
    v2_apis = {protocol: [] for protocol in LARGEST_V2}
    with stack.aws_proxy.unmetered():  # v2 deployments live in the proxy; seeding is not the agent's traffic
        for protocol, count in LARGEST_V2.items():
            for i in range(count):
                v2_apis[protocol].append(create_v2_api(stack.aws_proxy.url, f"{protocol.lower()}-{i:03}", protocol,
                                                       {"team": f"t{i % 7}"}, {"prod": {"env": "production"}, "dev": {}}))
    rest = len(rest_names)
    total = rest + sum(len(apis) for apis in v2_apis.values())

    started = time.monotonic()
    run = stack.run({"mode": "full"})
    seconds = time.monotonic() - started

    assert run.succeeded, run.printed[-3000:]
    assert len(published(stack)[PROD]) == len(published(stack)[DEV]) == total
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "apigateway"}
    throttled = sum(n for (service, _), n in stack.aws_proxy.throttled().items() if service == "apigateway")
    limits = run.limits
    print(f"\nlargest account: {rest} REST + {total - rest} HTTP and WebSocket APIs x 2 stages, "
          f"full sync in {seconds:.0f} s")
    print(f"API Gateway calls: {calls} (total {sum(calls.values())}), throttled: {throttled}")
    print(f"largest state input: {limits['largestInput']}, largest output: {limits['largestOutput']}")
    print(f"history events: {limits['historyEvents']} of {limits['maxHistoryEvents']}")
    print(f"control plane requests: {len(stack.apicp.requests())}")
    assert throttled == 0
    assert limits["largestOutput"]["bytes"] < 200 * 1024 and limits["largestInput"]["bytes"] < 200 * 1024
    assert limits["historyEvents"] < 25_000
    # The lower bound: per management API a page per 500 APIs and a GetStages per API, and one
    # empty domain name listing (no custom domain here).
    assert calls == {"GetRestApis": -(-rest // 500), "GetStages": rest, "GetDomainNames": 1,
                     "GetApis": -(-(total - rest) // 500), "GetStages (v2)": total - rest, "GetDomainNames (v2)": 1}

    # Then one metrics window of prod with traffic on every API of the account.
    window_start = latest_window_end(time.time()) - INTERVAL
    minutes = [window_start + 60 * m for m in range(INTERVAL // 60)]
    put_steady_traffic(stack.moto_url, rest_names, [api.id for api in v2_apis["HTTP"]],
                       [api.id for api in v2_apis["WEBSOCKET"]], ["prod"], minutes)
    # The full sync's run may have sent this window already, before the traffic: sent again here
    # because the watermark is put back, so only what this run sends counts.
    state_table.put_metrics_watermark("prod", window_start)
    sent_before = len(stack.apicp.state()["metrics"])
    stack.aws_proxy.reset()
    started = time.monotonic()
    run = stack.run()
    seconds = time.monotonic() - started

    assert run.succeeded, run.printed[-3000:]
    reports = [m["body"] for m in stack.apicp.state()["metrics"][sent_before:]
               if m["runtimeId"] == PROD and m["body"]["timestamp"] // 1000 == window_start + INTERVAL]
    assert len(reports) == 1, "the window arrives once"
    per_api = {m["apiId"]: m for m in reports[0]["apiTransactionMetricsList"]}
    assert len(per_api) == total
    catalog = published(stack)[PROD]
    for api_id, metrics in per_api.items():
        assert (metrics["apiName"], metrics["apiVersion"]) == (catalog[api_id]["name"], catalog[api_id]["version"])
        kind = catalog[api_id]["attributes"]["awsApiType"]
        assert metrics["apiMetrics"]["transactionCount"] == {"REST": 50, "HTTP": 50, "WEBSOCKET": 75}[kind], api_id
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "monitoring"}
    limits = run.limits
    print(f"metrics window of {total} active APIs in {seconds:.0f} s; CloudWatch calls: {calls}")
    # The APIs' names and versions come from the stage's catalog (stored gzipped), not from API Gateway.
    assert not [op for (service, op) in stack.aws_proxy.counts() if service == "apigateway"]
    print(f"largest state input: {limits['largestInput']}, largest output: {limits['largestOutput']}")
    assert limits["largestOutput"]["bytes"] < 200 * 1024 and limits["largestInput"]["bytes"] < 200 * 1024
    # 1,320 x 5 REST + 600 x 5 HTTP + 600 x 6 WebSocket metrics, at most 500 to a call without splitting an API.
    assert calls["GetMetricData"] == 27


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
