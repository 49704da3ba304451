"""End-to-end: one deployment federating three accounts in two regions through the fan-out (targets.asl.json), each
target's run an execution of its own; the member accounts reached through their role, as STS allows it."""

from __future__ import annotations

import json
import time

import pytest

from conftest import FUNCTION_SETTINGS
from seed import create_rest_api, put_traffic, recent_minutes
from stack import HOME_ACCOUNT, IAM_TARGETS_USES_DIR, STACK_DIR, EmbeddedStack, StateTable, boto

MEMBER, LATE = "111111111111", "222222222222"  # LATE's role is missing, then admits another external id, then this one
REGIONS = ("us-east-1", "eu-west-1")
EXTERNAL_ID = "hub-42"
ROLE = "ApicpAgentReader"
SYNC_STUB = STACK_DIR / "sync-stub.asl.json"
TRAFFIC = (20, 2, 1, 100.0, 60.0)


def runtime(account: str, region: str, stage: str = "prod") -> str:
    return f"{account}_{region}_{stage}"


def trust(external_id: str) -> str:
    """The member role's trust policy as the StackSet deploys it: the agent's account, with the external id."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HOME_ACCOUNT}:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]})


def put_member_role(stack: EmbeddedStack, account: str, external_id: str) -> None:
    iam = boto("iam", stack.moto_url, account)
    try:
        iam.update_assume_role_policy(RoleName=ROLE, PolicyDocument=trust(external_id))
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=trust(external_id))


@pytest.fixture(scope="module")
def targets_stack():
    # Its calls are checked against the grants of a fan-out deployment (`make cdk-check` synthesizes one with these
    # targets) and of the member role.
    stack = EmbeddedStack(iam_uses_dir=IAM_TARGETS_USES_DIR).start({
        **FUNCTION_SETTINGS,
        "TARGET_ACCOUNTS": f"{HOME_ACCOUNT},{MEMBER},{LATE}",
        "TARGET_REGIONS": ",".join(REGIONS),
        "TARGET_ROLE_EXTERNAL_ID": EXTERNAL_ID,
        "TARGET_CONCURRENCY": "3",
    })
    yield stack
    stack.stop()


def failed_targets(run) -> dict[str, str]:
    return {f"{f['target']['account']}/{f['target']['region']}": f["error"] for f in run.output["failed"]}


def test_every_account_region_is_synced_by_its_own_run_and_a_refused_role_fails_only_its_targets(targets_stack):
    stack = targets_stack
    apis = {}
    minutes = recent_minutes(30)
    for account in (HOME_ACCOUNT, MEMBER, LATE):
        for region in REGIONS:
            name = f"pets-{account[:4]}-{region}"
            apis[account, region] = create_rest_api(stack.moto_url, name, {"team": "core"}, {"prod": {}},
                                                    account=account, region=region)
            put_traffic(stack.moto_url, name, "prod", minutes, TRAFFIC, account=account, region=region)
    put_member_role(stack, MEMBER, EXTERNAL_ID)
    state_table = StateTable(stack.moto_url)

    # 0. Before the upgrade: one account-region, synced by the workflow alone, as a single-target deployment does.
    before = stack.run()
    assert before.succeeded, before.printed
    home_before = state_table.item("prod")
    time.sleep(1.5)

    # 1. LATE has no role yet: its two targets fail, with the reason; the four others are synced in full.
    first = stack.run(fan_out=True)
    assert first.succeeded, first.printed
    assert (first.output["targets"], first.output["succeeded"]) == (6, 4), first.output
    assert failed_targets(first) == {f"{LATE}/{region}": "TargetUnreachable" for region in REGIONS}
    assert all(f"role/{ROLE}" in f["cause"] for f in first.output["failed"]), first.output["failed"]
    published = stack.apicp.state()["apis"]
    for account in (HOME_ACCOUNT, MEMBER):
        for region in REGIONS:
            assert set(published[runtime(account, region)]) == {f"{apis[account, region].id}_prod"}, (account, region)
    assert not any(runtime(LATE, region) in published for region in REGIONS)
    # Each target's state is its own: the home target keeps the keys it always had, and with them its runtime,
    # registered once, and its watermarks (this run was incremental there).
    home_after = state_table.item("prod")
    assert home_after["registeredId"] == runtime(HOME_ACCOUNT, "us-east-1")
    assert home_after["assetsFullSyncAt"] == home_before["assetsFullSyncAt"], "the upgrade is no new full sync"
    assert home_after["assetsWatermark"] > home_before["assetsWatermark"]
    registrations = [r for r in stack.apicp.requests() if r["method"] == "POST" and r["path"].endswith("/v2/runtimes")]
    assert len(registrations) == 4, "home us-east-1 once (before the upgrade), then home eu-west-1 and MEMBER's two"
    assert state_table.item(f"{HOME_ACCOUNT}/eu-west-1/prod")["registeredId"] == runtime(HOME_ACCOUNT, "eu-west-1")
    assert state_table.item(f"{MEMBER}/eu-west-1/prod")["registeredId"] == runtime(MEMBER, "eu-west-1")
    # The runs read CloudWatch and CloudTrail where their APIs are: each target's metrics come from its own account.
    assert first.limits["historyEvents"] < 200, "the fan-out's history holds a few events per target"

    # 2. A role that asks another external id refuses the agent just the same.
    put_member_role(stack, LATE, "someone-else")
    second = stack.run(fan_out=True)
    assert second.succeeded, second.printed
    assert failed_targets(second) == {f"{LATE}/{region}": "TargetUnreachable" for region in REGIONS}

    # 3. Once it admits the agent, LATE's first successful run is its full sync; nothing else is lost meanwhile.
    put_member_role(stack, LATE, EXTERNAL_ID)
    third = stack.run(fan_out=True)
    assert third.succeeded, third.printed
    assert third.output["failed"] == [] and third.output["succeeded"] == 6
    published = stack.apicp.state()["apis"]
    for region in REGIONS:
        assert set(published[runtime(LATE, region)]) == {f"{apis[LATE, region].id}_prod"}
        assert state_table.item(f"{LATE}/{region}/prod")["assetsFullSyncAt"] > 0

    # 4. Changes in two targets reach the control plane from their own CloudTrail, incrementally.
    full_syncs = {(a, r): state_table.item(key(a, r))["assetsFullSyncAt"] for a in (HOME_ACCOUNT, MEMBER) for r in REGIONS}
    changed = {}
    for account, region in ((HOME_ACCOUNT, "us-east-1"), (MEMBER, "eu-west-1")):
        api = create_rest_api(stack.moto_url, f"orders-{account[:4]}", {"team": "shop"}, {"prod": {}},
                              account=account, region=region)
        at = state_table.item(key(account, region))["assetsWatermark"] + 1
        stack.cloudtrail.add_event("CreateDeployment", eventTime=at, account=account, region=region,
                                   requestParameters={"restApiId": api.id, "stageName": "prod"})
        changed[account, region] = api
    time.sleep(2)
    fourth = stack.run(fan_out=True)
    assert fourth.succeeded and fourth.output["failed"] == [], fourth.printed
    published = stack.apicp.state()["apis"]
    for (account, region), api in changed.items():
        assert f"{api.id}_prod" in published[runtime(account, region)], (account, region)
    # Not in the other region of the same account: each target reads its own event history.
    assert f"{changed[MEMBER, 'eu-west-1'].id}_prod" not in published[runtime(MEMBER, "us-east-1")]
    for target, at in full_syncs.items():
        assert state_table.item(key(*target))["assetsFullSyncAt"] == at, f"{target}: incremental, not a full sync"

    # Metrics of every target, each window once.
    windows = [(m["runtimeId"], m["body"]["timestamp"]) for m in stack.apicp.state()["metrics"]]
    assert len(windows) == len(set(windows)), "no window sent twice"
    synced_before_late = {runtime(a, r) for a in (HOME_ACCOUNT, MEMBER) for r in REGIONS}
    assert synced_before_late <= {runtime_id for runtime_id, _ in windows}, windows

    # 5. A region the account has not enabled (AWS answers every call there UnrecognizedClientException), met by the
    # schedule's tick: that target is handed over with its error and its run fails alone; enabled, it syncs again.
    disabled = f"{MEMBER}/eu-west-1"
    stack.aws_proxy.accounts.set_region_enabled(MEMBER, "eu-west-1", False)
    time.sleep(1.5)
    ticked = stack.tick("2027-01-15T09:00:00Z")
    reasons = {f"{h['target']['account']}/{h['target']['region']}": h["reason"] for h in ticked.report["handedOver"]}
    assert reasons[disabled].startswith("AwsAccessDenied: ") and "UnrecognizedClientException" in reasons[disabled]
    assert ticked.report["targets"] == 6 and ticked.execution and ticked.execution.succeeded, ticked.report
    assert failed_targets(ticked.execution) == {disabled: "AwsAccessDenied"}, ticked.execution.output
    assert ticked.execution.output["succeeded"] == len(reasons) - 1, "every other target handed over synced"
    stack.aws_proxy.accounts.set_region_enabled(MEMBER, "eu-west-1", True)
    time.sleep(1.5)
    again = stack.tick("2027-01-15T09:01:00Z")
    assert disabled not in {f"{h['target']['account']}/{h['target']['region']}" for h in again.report["handedOver"]} \
        or failed_targets(again.execution) == {}, again.report
    assert again.execution is None or again.execution.output["failed"] == [], again.execution


def key(account: str, region: str, stage: str = "prod") -> str:
    """A target's state item key: the home target's is the stage's name alone."""
    return stage if (account, region) == (HOME_ACCOUNT, "us-east-1") else f"{account}/{region}/{stage}"


@pytest.fixture(scope="module")
def organization_stack():
    stack = EmbeddedStack(record_iam_uses=False).start({**FUNCTION_SETTINGS, "TARGET_ACCOUNTS": "organization"})
    yield stack
    stack.stop()


def test_an_organization_federates_its_active_accounts_read_at_each_run(organization_stack):
    stack = organization_stack
    organizations = boto("organizations", stack.moto_url)
    organizations.create_organization(FeatureSet="ALL")
    members = [organizations.create_account(AccountName=f"apis-{n}", Email=f"apis-{n}@example.com")
               ["CreateAccountStatus"]["AccountId"] for n in (1, 2)]
    apis = {}
    for account in (HOME_ACCOUNT, *members):
        apis[account] = create_rest_api(stack.moto_url, f"pets-{account[:4]}", {}, {"prod": {}}, account=account)
        if account != HOME_ACCOUNT:
            # The StackSet's role, without an external id (none is configured): the agent's account and organization.
            iam = boto("iam", stack.moto_url, account)
            iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HOME_ACCOUNT}:root"},
                "Action": "sts:AssumeRole"}]}))

    run = stack.run(fan_out=True)
    assert run.succeeded, run.printed
    assert (run.output["targets"], run.output["failed"]) == (3, []), run.output
    published = stack.apicp.state()["apis"]
    for account, api in apis.items():
        assert set(published[runtime(account, "us-east-1")]) == {f"{api.id}_prod"}, account

    # A closed account leaves the plan at the next run (its runtime is the orphan clean-up's, not a failure).
    organizations.close_account(AccountId=members[1])
    states = {a["Id"]: a.get("State", a.get("Status")) for a in organizations.list_accounts()["Accounts"]}
    assert states[members[1]] != "ACTIVE", states
    after = stack.run(fan_out=True)
    assert after.succeeded, after.printed
    assert (after.output["targets"], after.output["failed"]) == (2, []), after.output


# 100 accounts x 3 regions, the scale: the fan-out's own history and payloads, with each target's run a
# stand-in that ends at once (tests/stack/sync-stub.asl.json; each real run's limits are the workflow's, measured by
# the benchmarks at the largest account). The accounts ending in 13 fail, as a refused role would.
SCALE_ACCOUNTS = [f"{100_000_000_000 + n:012d}" for n in range(100)]
SCALE_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


@pytest.fixture(scope="module")
def scale_stack():
    stack = EmbeddedStack(record_iam_uses=False).start({
        **FUNCTION_SETTINGS,
        "TARGET_ACCOUNTS": ",".join(SCALE_ACCOUNTS),
        "TARGET_REGIONS": ",".join(SCALE_REGIONS),
        "TARGET_CONCURRENCY": "40",
    })
    yield stack
    stack.stop()


def test_three_hundred_targets_fit_the_fan_outs_history_and_payloads(scale_stack):
    run = scale_stack.run({"mode": "full"}, fan_out=True, child_definition=SYNC_STUB)
    assert run.succeeded, run.printed[-3000:]
    assert (run.output["targets"], run.output["succeeded"]) == (300, 297), run.output
    assert {f["target"]["account"] for f in run.output["failed"]} == {"100000000013"}
    limits = run.limits
    assert limits["children"]["executions"] == 300 and limits["children"]["failed"] == 3
    # A Map iteration and a .sync Task per target, three states besides: far from 25,000 events and 256 KiB.
    assert limits["historyEvents"] < 10 * 300 + 50, limits["historyEvents"]
    largest = max(limits["largestInput"]["bytes"], limits["largestOutput"]["bytes"])
    assert largest < 120 * 1024, limits
    # Three transitions besides one per target and one per failed target: the fan-out's share of the bill.
    assert limits["stateTransitions"] <= 3 + 300 + 3 + 1, limits["stateTransitions"]
