"""One embedded stack for the end-to-end tests, reset to a clean account before each test."""

from __future__ import annotations

import time

import pytest
from fake_apicp import UNKNOWN_API_BEHAVIOURS
from stack import EmbeddedStack, StateTable, due_window_end, start_recorded_execution

# The fake's default: pages capped below the 500 the agent asks for, as the contract allows.
DEFAULT_PAGE_SIZE_CAP = 100

# Two 5-minute metric windows per run, so a backlog shows bounded catch-up across runs; CloudWatch
# read on every run; a new installation starts two windows back.
FUNCTION_SETTINGS = {
    "STAGES": "*",
    "METRICS_INTERVAL_SECONDS": "300",
    "METRICS_BUFFER_SECONDS": "180",
    "METRICS_MAX_WINDOWS_PER_RUN": "2",
    "METRICS_FETCH_INTERVAL_SECONDS": "300",
    "METRICS_BACKFILL_SECONDS": "600",
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
    stack.reset_account()
    stack.apicp.set_page_size_cap(DEFAULT_PAGE_SIZE_CAP)
    stack.apicp.set_unknown_api_behaviour(UNKNOWN_API_BEHAVIOURS[0])
    return stack


@pytest.fixture
def fresh_stack():
    """Starts a stack of its own, whose functions start cold, as after a deployment."""
    started = []

    def start(overrides: dict[str, str] | None = None) -> EmbeddedStack:
        started.append(EmbeddedStack().start({**FUNCTION_SETTINGS, **(overrides or {})}))
        return started[-1]

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture
def state_table(clean):
    return StateTable(clean.moto_url)


def wait_for_a_new_window() -> None:
    """Watermarks are whole seconds: a run whose list-changes falls in the same second as the last
    run's has no CloudTrail window to read yet (as never happens on a schedule)."""
    time.sleep(1.5)


def wait_until_in_window(event_time: float) -> None:
    """Until a run started now reads a CloudTrail window holding `event_time`: windows end
    CHANGE_BUFFER_SECONDS before their run, in whole seconds, the end excluded."""
    ready_at = event_time + int(FUNCTION_SETTINGS["CHANGE_BUFFER_SECONDS"]) + 2
    time.sleep(max(0.0, ready_at - time.time()))


def running_execution(stack, name: str) -> str:
    """An execution of the agent's state machine that Step Functions (moto) reports as running,
    as an overlapping scheduled execution would be; returns its ARN."""
    return start_recorded_execution(stack.moto_url, name)


def metrics_window_end(state_table: StateTable, stages=("prod", "dev")) -> int:
    """The end of the latest metrics window the next run reads for `stages`: before now less the metrics buffer, and
    before their assets watermarks, up to which their API catalogs are complete. The stages must have been synced
    (the metrics branch waits for a stage's first full sync)."""
    return due_window_end(time.time(), min(state_table.item(stage)["assetsWatermark"] for stage in stages))
