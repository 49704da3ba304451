"""On demand (`make test-large`): a full sync of the largest account API Gateway allows in one
region, on the strict local stack: 600 regional, 120 edge and 600 private REST APIs (fixed
quotas), each deployed to two stages, `STAGES=*`, at the default API Gateway pace.

It must complete in one execution, inside every Lambda timeout, the 256 KiB payload limit and
the 25,000 history events, without a single throttled API Gateway call. It prints the figures.
"""

from __future__ import annotations

import time

import pytest
from seed import create_rest_api

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
    # One listing of the account (a page per 500 APIs, a GetStages per API), made by the
    # discovery and read back by the full sync.
    assert calls == {"GetRestApis": -(-total // 500), "GetStages": total}
