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

from iam_check import MEMBER_ROLE, check, grants, load_uses, member_grants  # noqa: E402
from stack import IAM_TARGETS_USES_DIR, IAM_USES_DIR, STATE_MACHINE_NAME  # noqa: E402

TEMPLATE = REPO / "cdk" / "cdk.out" / "ApiGatewayApicpAgent.template.json"
# The fan-out deployment of tests/e2e/test_targets.py (`make cdk-check` synthesizes it with its targets), and the
# member role its functions assume in the other accounts.
TARGETS_TEMPLATE = REPO / "cdk" / "cdk.out.targets" / "ApiGatewayApicpAgent.template.json"
MEMBER_ROLE_TEMPLATE = REPO / "cdk" / "cdk.out.targets" / "ApiGatewayApicpAgent-MemberRole.template.json"


def test_every_call_of_the_end_to_end_suite_has_a_grant_and_every_grant_is_used():
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: `make cdk-check` synthesizes it")
    uses = load_uses(IAM_USES_DIR)
    functions = {use.function for use in uses}
    assert functions == {"ensure-runtime", "list-changes", "transform", "publish", "ack-watermark", "tick"}, (
        f"the end-to-end suite's calls were not recorded in {IAM_USES_DIR} (run it first): {sorted(functions)}")

    missing, unused = check(uses, grants(json.loads(TEMPLATE.read_text()), STATE_MACHINE_NAME))

    assert missing == [], "calls no grant allows:\n" + "\n".join(map(str, missing))
    # The tick runs the tasks' own code for a quiet target, under the tasks' grants for those paths; the suite does
    # not drive every path through the tick (a claim held by an execution, a carried refusal, a resumed read...), so
    # its grants are checked for the calls it made, not for use.
    unused = [grant for grant in unused if grant[0] != "tick"]
    assert unused == [], "grants no call used:\n" + "\n".join(map(str, unused))


def test_every_call_of_a_fan_out_deployment_has_a_grant_there_or_in_the_member_role():
    """The fan-out deployment's functions, with its scoped table grants and AssumeRole, and the member role, with the
    calls made in the target accounts. Only the fan-out suite runs this deployment, which does not reach every path
    (no HTTP API or custom domain in a member account, no read resumed across invocations): a grant it leaves unused
    is checked by the single-target test above, whose functions hold the same grants unscoped. What only this
    deployment grants must be used here: each member role action, and AssumeRole into each member account."""
    for template in (TARGETS_TEMPLATE, MEMBER_ROLE_TEMPLATE):
        if not template.exists():
            pytest.fail(f"{template} is missing: `make cdk-check` synthesizes it")
    uses = load_uses(IAM_TARGETS_USES_DIR)
    functions = {use.function for use in uses}
    assert functions == {"ensure-runtime", "list-changes", "transform", "publish", "ack-watermark", "tick",
                         MEMBER_ROLE}, (
        f"the fan-out suite's calls were not recorded in {IAM_TARGETS_USES_DIR} (run it first): {sorted(functions)}")
    by_function = {**grants(json.loads(TARGETS_TEMPLATE.read_text()), STATE_MACHINE_NAME),
                   **member_grants(json.loads(MEMBER_ROLE_TEMPLATE.read_text()))}

    missing, unused = check(uses, by_function)

    assert missing == [], "calls no grant allows:\n" + "\n".join(map(str, missing))
    member_actions = {action for statement in by_function[MEMBER_ROLE] for action in statement.actions}
    assert member_actions == {action for use in uses if use.function == MEMBER_ROLE for action in [use.action]}, (
        "every member role action is used, and no other")
    # The deployment's own account is listed too, but its role is never assumed: that account is a token at synth.
    assumed = [grant for grant in unused if grant[1] == "sts:AssumeRole" and ":123456789012:" not in grant[2]]
    assert assumed == [], "AssumeRole grants no call used:\n" + "\n".join(map(str, assumed))
