"""End-to-end reliability: a soak under random control plane faults and AWS throttling, heartbeats
that tell the truth, and a known password that must appear nowhere.

The soak is seeded (`SOAK_SEED`, printed on failure) and bounded (`SOAK_ROUNDS` rounds of changes,
each followed by at most `RUNS_TO_CONVERGE` runs); `make soak` runs a longer one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_apicp import CHAOS_KINDS
from seed import create_rest_api, put_traffic, recent_minutes, redeploy_rest_apis
from stack import APICP_PASSWORD, APICP_USER, STATE_TABLE, boto

from conftest import StateTable, metrics_window_end, wait_for_a_new_window
from test_workflow import DEV, PROD, latest_window_end, published, seed

SOAK_SEED = int(os.environ.get("SOAK_SEED", "20261122"))
SOAK_ROUNDS = int(os.environ.get("SOAK_ROUNDS", "3"))
# A round's changes reach the control plane within this many runs, whatever the faults.
RUNS_TO_CONVERGE = 4
# The client gives up after 2 s; a slow answer comes after 3 s (and is applied all the same).
SOAK_SETTINGS = {"APICP_TIMEOUT_SECONDS": "2"}
SLOW_MS = 3000


def aws_view(stack, stage: str) -> dict[str, dict]:
    """What API Gateway deploys to the stage: published id -> (name, tags, deployment)."""
    apigw = boto("apigateway", stack.moto_url)
    view = {}
    for api in apigw.get_rest_apis(limit=500)["items"]:
        for found in apigw.get_stages(restApiId=api["id"])["item"]:
            if found["stageName"] == stage and found.get("deploymentId"):
                tags = {**api.get("tags", {}), **found.get("tags", {})}
                view[f"{api['id']}_{stage}"] = {"name": api["name"], "tags": sorted(f"{k}:{v}" for k, v in tags.items()),
                                                 "version": found["deploymentId"]}
    return view


def apicp_view(stack, runtime: str) -> dict[str, dict]:
    return {api_id: {"name": doc["name"], "tags": sorted(doc.get("tags", [])), "version": doc.get("version")}
            for api_id, doc in published(stack).get(runtime, {}).items()}


def mutate(stack, rng: random.Random, apis: dict[str, str], round_: int) -> list[str]:
    """Creates, redeploys, renames and deletes APIs as a team would between runs; CloudTrail records each
    change inside the next incremental window. Returns what it did."""
    apigw = boto("apigateway", stack.moto_url)
    at = time.time() - 420  # inside the next window: it ends 300 s before now and overlaps 900 s back
    done = []
    for i in range(2):
        created = create_rest_api(stack.moto_url, f"soak-{round_}-{i}", {"round": str(round_)}, {"prod": {}})
        apis[created.id] = f"soak-{round_}-{i}"
        stack.cloudtrail.add_event("CreateDeployment", eventTime=at,
                                   requestParameters={"restApiId": created.id, "stageName": "prod"})
        done.append(f"create {created.id}")
    existing = sorted(apis)
    for api_id in rng.sample(existing, k=min(2, len(existing))):
        apigw.create_deployment(restApiId=api_id, stageName="prod", description=f"round {round_}")
        stack.cloudtrail.add_event("CreateDeployment", eventTime=at,
                                   requestParameters={"restApiId": api_id, "stageName": "prod"})
        done.append(f"redeploy {api_id}")
    # moto answers REST TagResource 404, so a rename stands for the metadata change (the v2 tag
    # path is exercised in test_every_api_type).
    tagged = rng.choice(existing)
    apigw.update_rest_api(restApiId=tagged, patchOperations=[{"op": "replace", "path": "/name",
                                                              "value": f"renamed-{round_}"}])
    stack.cloudtrail.add_event("UpdateRestApi", eventTime=at, requestParameters={"restApiId": tagged})
    done.append(f"rename {tagged}")
    deleted = rng.choice([a for a in existing if a not in {tagged}])
    apigw.delete_rest_api(restApiId=deleted)
    apis.pop(deleted)
    stack.cloudtrail.add_event("DeleteRestApi", eventTime=at, requestParameters={"restApiId": deleted})
    done.append(f"delete {deleted}")
    return done


def test_under_random_control_plane_faults_and_throttling_the_control_plane_converges_and_no_window_repeats(
        fresh_stack):
    stack = fresh_stack(SOAK_SETTINGS)
    rng = random.Random(SOAK_SEED)
    seeded = seed(stack)
    apis = {api.id: name for name, api in seeded.items()}
    # The first run registers and fully syncs without faults; the soak is about what follows.
    assert stack.run().succeeded
    stack.apicp.set_chaos(SOAK_SEED, rate=0.3, kinds=CHAOS_KINDS, slow_ms=SLOW_MS)
    stack.aws_proxy.set_throttling(SOAK_SEED, rate=0.1, services=("apigateway", "monitoring"))
    stack.cloudtrail.set_throttling(SOAK_SEED, rate=0.2)
    runs, trail = 0, []
    try:
        for round_ in range(SOAK_ROUNDS):
            trail.append(f"round {round_}: " + ", ".join(mutate(stack, rng, apis, round_)))
            put_traffic(stack.moto_url, "pets", "prod", recent_minutes(10), (20, 1, 1, 100.0, 60.0))
            for attempt in range(1, RUNS_TO_CONVERGE + 1):
                run = stack.run()
                runs += 1
                trail.append(f"  run {attempt}: {run.status} {run.error or ''}")
                if run.succeeded and apicp_view(stack, PROD) == aws_view(stack, "prod"):
                    break
            else:
                pytest.fail(f"round {round_} did not converge in {RUNS_TO_CONVERGE} runs")
    except BaseException:
        print(f"soak seed {SOAK_SEED} (SOAK_SEED={SOAK_SEED} reproduces it)\n" + "\n".join(trail))
        raise
    finally:
        stack.apicp.set_chaos(None)
        stack.aws_proxy.set_throttling(None, 0)
        stack.cloudtrail.set_throttling(None, 0)

    requests = stack.apicp.requests()
    faults = Counter(r["fault"] for r in requests if r["fault"])
    print(f"soak seed {SOAK_SEED}: {SOAK_ROUNDS} rounds converged in {runs} runs; {len(requests)} control plane "
          f"requests, faults {dict(faults)}; AWS throttled {sum(stack.aws_proxy.throttled().values())}")
    assert faults, "the soak met faults"
    assert_each_window_once_up_to_the_watermark(stack, "prod", PROD)


def heartbeats_of(stack, runtime: str) -> list[tuple[int, int]]:
    return [(h["created"], h["active"]) for h in stack.apicp.state()["heartbeats"] if h["runtimeId"] == runtime]


def test_heartbeats_say_inactive_for_a_stage_without_apis_and_after_a_failed_run_and_show_an_outage(
        clean, state_table):
    stack = clean
    seed(stack)
    typo = PROD.replace("prod", "prdo")
    stages = {"stages": ["prod", "prdo"]}  # as a typo in STAGES would configure them

    first = stack.run(stages)
    assert first.succeeded, first.printed
    assert {(i["stage"], i["reason"]) for i in first.output["inactive"]} == {("prod", "notSyncedYet"),
                                                                            ("prdo", "notSyncedYet")}
    second = stack.run(stages)
    assert second.succeeded, second.printed
    assert second.output["inactive"] == [{"stage": "prdo", "runtimeId": typo, "reason": "noDeployedApi"}]
    assert heartbeats_of(stack, PROD)[-1][1] == 1 and heartbeats_of(stack, typo)[-1][1] == 0
    # Stage items from before the catalog's size was kept on them: the stored catalogs tell the same.
    for stage in ("prod", "prdo"):
        state_table.remove(stage, "deployedApis")
    upgraded = stack.run(stages)
    assert upgraded.output["inactive"] == [{"stage": "prdo", "runtimeId": typo, "reason": "noDeployedApi"}]

    # The metrics branch fails for prod: the next heartbeat says so.
    stack.apicp.add_fault("/metrics$", method="POST", status=500, count=50)
    state_table.put_metrics_watermark("prod", int(time.time()) // 300 * 300 - 1200)
    assert not stack.run(stages).succeeded
    stack.apicp.clear_faults()
    third = stack.run(stages)
    assert {"stage": "prod", "runtimeId": PROD, "reason": "lastRunFailed"} in third.output["inactive"]
    assert heartbeats_of(stack, PROD)[-1][1] == 0

    # Ten minutes without a run (heartbeat interval 60 s): the control plane is shown the gap.
    ten_minutes_ago = int(time.time()) - 600
    state_table.put_number("prod", "lastHeartbeatAt", ten_minutes_ago)
    fourth = stack.run(stages)
    assert fourth.succeeded, fourth.printed
    gap, live = heartbeats_of(stack, PROD)[-2:]
    assert gap == ((ten_minutes_ago + 60) * 1000, 0), "inactive from one interval after the last heartbeat"
    assert live[1] == 1 and live[0] > gap[0]


def test_the_control_plane_password_appears_in_no_log_payload_history_state_or_error(clean):
    stack = clean
    seed(stack)
    assert stack.run({"mode": "full"}, history=True).succeeded
    stack.apicp.add_fault("/metrics$", method="POST", status=503, count=50)
    failing = stack.run(history=True)
    stack.apicp.clear_faults()
    stack.apicp.set_credentials(APICP_USER, "rotated-elsewhere")
    try:
        refused = stack.run(history=True)
    finally:
        stack.apicp.set_credentials(APICP_USER, APICP_PASSWORD)

    assert refused.error == "Unauthorized"
    assert f"for user \"{APICP_USER}\"" in refused.cause and stack.apicp.url in refused.cause, refused.cause
    texts = {"errors": json.dumps([(r.error, r.cause) for r in (failing, refused)])}
    for path in stack.log_dir.iterdir():  # the functions' logs, every history event with its payload
        if path.name != "moto.log":  # moto logs the test's own PutSecretValue, not the agent
            texts[path.name] = path.read_text(errors="replace")
    table = boto("dynamodb", stack.moto_url).scan(TableName=STATE_TABLE)["Items"]
    texts["state table"] = json.dumps(table, default=lambda blob: gzip.decompress(blob).decode())  # gzipped JSON
    assert any(name.startswith("history-") for name in texts), "the histories were kept"
    assert APICP_USER in texts["errors"], "the scan reads what the agent wrote"
    leaked = [name for name, text in texts.items() if APICP_PASSWORD in text]
    assert leaked == [], f"the password appears in {leaked}"


def stored_windows(stack) -> Counter:
    """(runtime, window timestamp) -> how many times the control plane stored that window."""
    return Counter((m["runtimeId"], m["body"]["timestamp"]) for m in stack.apicp.state()["metrics"])


def assert_each_window_once_up_to_the_watermark(stack, stage: str, runtime: str) -> None:
    stored = stored_windows(stack)
    assert [key for key, times in stored.items() if times > 1] == [], "a window reached the control plane twice"
    watermark = StateTable(stack.moto_url).item(stage)["metricsWatermark"] * 1000
    windows = sorted(t for (r, t) in stored if r == runtime)
    assert windows and windows[-1] == watermark, "the watermark is the last window stored"
    assert windows == list(range(windows[0], watermark + 1, 300_000)), "no window lost"


def test_throttled_aws_apis_slow_the_run_down_and_what_a_task_gives_up_the_state_machine_retries(clean, state_table):
    stack = clean
    apis = seed(stack)
    state_table.put_metrics_watermark("prod", int(time.time()) // 300 * 300 - 1200)
    stack.aws_proxy.set_throttling(SOAK_SEED, rate=0.1, services=("apigateway", "monitoring"))
    stack.cloudtrail.set_throttling(1, rate=0.5)  # seed 1: the first LookupEvents is throttled, the next is not
    # Five throttled answers in a row: more than the SDK's attempts within one task.
    stack.aws_proxy.add_fault("apigateway", "GetRestApis", status=429, error_code="TooManyRequestsException", count=5)
    # Two: the SDK's attempts within the task absorb them.
    stack.aws_proxy.add_fault("monitoring", "GetMetricData", status=400, error_code="Throttling", count=2)

    full = stack.run({"mode": "full"})

    assert full.succeeded, full.printed
    assert full.count("EnsureRuntime", "RETRIED") == 1, "the state machine retried the task that gave up"
    assert apicp_view(stack, PROD) == aws_view(stack, "prod")

    wait_for_a_new_window()
    redeploy_rest_apis(stack, [apis["pets"].id, apis["orders"].id])
    incremental = stack.run()

    assert incremental.succeeded, incremental.printed
    assert apicp_view(stack, PROD) == aws_view(stack, "prod"), "the redeployments arrived"
    calls = stack.aws_proxy.counts()
    assert calls[("apigateway", "GetRestApis")] > 5, "sent again after the state machine's retry"
    assert calls[("monitoring", "GetMetricData")] > 2, "sent again within the task"
    assert not incremental.count("MetricsTransform", "RETRIED"), "the task did not give up"
    assert len(stack.cloudtrail.requests()) == 2, "the throttled LookupEvents was sent again, once"
    assert_each_window_once_up_to_the_watermark(stack, "prod", PROD)


def timed_out(run, task: str) -> bool:
    """The run failed because Lambda's timeout cut `task` off (on every attempt the state machine made)."""
    failures = [s["error"] for s in run.states if s["name"] == task and s["status"] == "FAILED"]
    return not run.succeeded and "Sandbox.Timedout" in failures


def test_a_publish_cut_off_by_its_timeout_leaves_no_duplicate_window_or_api_and_the_next_run_converges(fresh_stack):
    # The client waits longer than the function lives: Lambda's timeout, not the client, ends the task.
    stack = fresh_stack({"APICP_TIMEOUT_SECONDS": "30"})
    apis = seed(stack)
    assert stack.run().succeeded  # the first sync, which the metrics branch waits for
    # Five windows due: the next run sends two (its most), the cut-off run and the next the rest.
    table = StateTable(stack.moto_url)
    table.put_metrics_watermark("prod", metrics_window_end(table, ("prod",)) - 1500)
    assert stack.run().succeeded
    stack.set_function_timeout("publish", 5)
    try:
        # Each metrics POST is stored, then answered after the function's 5 s are over.
        stack.apicp.set_chaos(SOAK_SEED, rate=1.0, kinds=("slow",), slow_ms=8000, path=r"/metrics$")
        cut_off = stack.run()
        assert timed_out(cut_off, "MetricsPublish"), cut_off.printed
        assert len(stored_windows(stack)) > 0, "the window in flight reached the control plane"
        # The state machine retries a timed-out task once: each attempt is cut off with a window in flight.
        cut_off_windows = sum(1 for s in cut_off.states
                              if s["name"] == "MetricsPublish" and s["status"] == "FAILED" and s["error"] == "Sandbox.Timedout")

        # An API upsert is stored, then the function is cut off before it sends the next.
        wait_for_a_new_window()
        redeploy_rest_apis(stack, [apis["pets"].id, apis["orders"].id])
        stack.apicp.set_chaos(SOAK_SEED, rate=1.0, kinds=("slow",), slow_ms=8000, path=r"/apis")
        cut_off = stack.run()
        assert timed_out(cut_off, "AssetsPublish"), cut_off.printed
    finally:
        stack.apicp.set_chaos(None)
        stack.set_function_timeout("publish", None)

    wait_for_a_new_window()
    converged = stack.run()

    assert converged.succeeded, converged.printed
    assert apicp_view(stack, PROD) == aws_view(stack, "prod"), "no duplicate API, none missing"
    assert_each_window_once_up_to_the_watermark(stack, "prod", PROD)
    in_doubt = [line for line in (stack.log_dir / "functions.log").read_text().splitlines()
                if "metrics window in doubt" in line and "cut off" in line]
    assert len(in_doubt) == cut_off_windows, "each window in flight when its task was cut off is reported in doubt, once"


def overlapping_runs(stack, count: int, execution_input: dict | None = None) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: stack.run(execution_input), range(count)))


@contextlib.contextmanager
def watermark_trace(stack, stages: tuple[str, ...]):
    """Samples the stages' watermarks while the block runs: [(stage, assets, metrics), ...]."""
    table, samples, done = StateTable(stack.moto_url), [], threading.Event()

    def sample():
        while not done.is_set():
            for stage in stages:
                item = table.item(stage)
                samples.append((stage, item.get("assetsWatermark"), item.get("metricsWatermark")))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def never_backwards(samples: list, stage: str, column: int) -> bool:
    positions = [s[column] for s in samples if s[0] == stage and s[column] is not None]
    return positions == sorted(positions)


@pytest.mark.parametrize("overlap", [2, 3])
def test_overlapping_executions_register_and_publish_once_and_leave_no_stage_claimed(clean, state_table, overlap):
    stack = clean
    apis = seed(stack)
    stages = ("prod", "dev")
    for stage in stages:  # two metrics windows due for each stage
        state_table.put_metrics_watermark(stage, latest_window_end(time.time()) - 600)

    with watermark_trace(stack, stages) as first_samples:
        first = overlapping_runs(stack, overlap, {"mode": "full"})
    wait_for_a_new_window()
    redeploy_rest_apis(stack, [apis["pets"].id, apis["orders"].id])
    with watermark_trace(stack, stages) as later_samples:
        later = overlapping_runs(stack, overlap)

    runs = first + later
    assert all(run.succeeded for run in runs), [run.printed for run in runs if not run.succeeded]
    runtimes = Counter(runtime["name"] for runtime in stack.apicp.state()["runtimes"].values())
    assert runtimes and set(runtimes.values()) == {1}, f"one runtime per stage: {runtimes}"
    assert apicp_view(stack, PROD) == aws_view(stack, "prod"), "each API once, the redeployments applied"
    skipped = [stage for run in runs for kind in ("assets", "metrics") for stage in run.output[kind]["skipped"]]
    assert skipped, "the executions overlapped on a claimed stage"
    for stage, runtime in (("prod", PROD), ("dev", DEV)):
        assert_each_window_once_up_to_the_watermark(stack, stage, runtime)
        for samples in (first_samples, later_samples):
            assert never_backwards(samples, stage, 1) and never_backwards(samples, stage, 2), samples
        item = state_table.item(stage)
        assert not {"assetsClaimedBy", "metricsClaimedBy"} & set(item), f"{stage} left claimed: {item}"
