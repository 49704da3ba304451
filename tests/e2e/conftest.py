"""One embedded stack for the end-to-end tests, reset to a clean account before each test."""

from __future__ import annotations

import urllib.request

import pytest
from stack import STATE_TABLE, EmbeddedStack, boto, create_state_table

# Two 5-minute metric windows per run, so a backlog shows bounded catch-up across runs.
FUNCTION_SETTINGS = {
    "STAGES": "*",
    "METRICS_INTERVAL_SECONDS": "300",
    "METRICS_BUFFER_SECONDS": "180",
    "METRICS_MAX_WINDOWS_PER_RUN": "2",
    "CHANGE_BUFFER_SECONDS": "300",
}


@pytest.fixture(scope="session")
def stack():
    embedded = EmbeddedStack().start(FUNCTION_SETTINGS)
    assert embedded.moto_url and embedded.apicp and embedded.cloudtrail, "tests need the embedded stack"
    yield embedded
    embedded.stop()


@pytest.fixture
def clean(stack):
    urllib.request.urlopen(urllib.request.Request(f"{stack.moto_url}/moto-api/reset", method="POST")).close()
    create_state_table(stack.moto_url)
    stack.apicp.reset()
    stack.cloudtrail.reset()
    return stack


class StateTable:
    def __init__(self, endpoint: str):
        self._dynamodb = boto("dynamodb", endpoint)

    def item(self, stage: str) -> dict:
        item = self._dynamodb.get_item(TableName=STATE_TABLE, Key={"stage": {"S": stage}}, ConsistentRead=True)
        return {k: (int(v["N"]) if "N" in v else v.get("S")) for k, v in item.get("Item", {}).items()}

    def claim(self, stage: str, kind: str, holder: str, until: int) -> None:
        """What an overlapping execution leaves while it works on the stage."""
        self._dynamodb.update_item(TableName=STATE_TABLE, Key={"stage": {"S": stage}},
                                   UpdateExpression=f"SET {kind}ClaimedBy = :by, {kind}ClaimExpiresAt = :until",
                                   ExpressionAttributeValues={":by": {"S": holder}, ":until": {"N": str(until)}})

    def put_metrics_watermark(self, stage: str, position: int) -> None:
        self._dynamodb.update_item(TableName=STATE_TABLE, Key={"stage": {"S": stage}},
                                   UpdateExpression="SET metricsWatermark = :p",
                                   ExpressionAttributeValues={":p": {"N": str(position)}})


@pytest.fixture
def state_table(clean):
    return StateTable(clean.moto_url)
