"""Each function's AWS calls in the end-to-end suite against its grants in the synthesized template.

Runs after the suite (`make test` runs it right after): every stack of the suite recorded the calls each function
made (tests/stack/iam_check.py), and `make cdk-check` synthesized the template. A call no statement allows fails, and
so does a grant no call used: moto enforces no IAM, so this is where a missing or needless permission shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "stack"))

from iam_check import check, grants, load_uses  # noqa: E402
from stack import IAM_USES_DIR, STATE_MACHINE_NAME  # noqa: E402

TEMPLATE = REPO / "cdk" / "cdk.out" / "ApiGatewayApicpAgent.template.json"


def test_every_call_of_the_end_to_end_suite_has_a_grant_and_every_grant_is_used():
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: `make cdk-check` synthesizes it")
    uses = load_uses(IAM_USES_DIR)
    functions = {use.function for use in uses}
    assert functions == {"ensure-runtime", "list-changes", "transform", "publish", "ack-watermark", "tick"}, (
        f"the end-to-end suite's calls were not recorded in {IAM_USES_DIR} (run it first): {sorted(functions)}")

    missing, unused = check(uses, grants(json.loads(TEMPLATE.read_text()), STATE_MACHINE_NAME))

    assert missing == [], "calls no grant allows:\n" + "\n".join(map(str, missing))
    assert unused == [], "grants no call used:\n" + "\n".join(map(str, unused))
