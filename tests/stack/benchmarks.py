"""Benchmarks: what a run of the agent costs as the account grows, next to AWS's limits and the vendor agent.

Measured on the strict local stack (stack.py), per account size (APIs in the largest region's mix of 1,320 REST,
600 HTTP and 600 WebSocket APIs, each deployed to two stages) and operation: a full sync, an idle incremental run,
a metrics read of API-stages without traffic (none listed by `ListMetrics`, each probed), a metrics read of active
API-stages, an incremental run after ten changes; each one execution of the real state machine:

- AWS calls at the wire (the AWS proxy and the CloudTrail fake count them), beside the design's lower bounds and the
  vendor agent's calls per run;
- the full sync's duration at the configured API Gateway pace, beside its floor (calls / pace);
- control plane requests;
- per task: wall time, peak RSS of the function's process, largest input and output; the execution's history events;
- each binary's cold start (exec to its first answer, under a Runtime API served here) and deployable zip size;
- what a month costs at a 1-minute and a 5-minute schedule, from these figures and AWS's list prices.

    python tests/stack/benchmarks.py [--sizes 100,600,2520] [--release] [--write docs/benchmarks.md]

Prints a markdown report; `make bench` runs the three sizes on release builds and keeps the report in
docs/benchmarks.md. Figures, not verdicts: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from moto.core.cbor import CBORDecoder  # noqa: E402

from lambda_adapter import FUNCTIONS_FILE, load_timeouts  # noqa: E402
from seed import SeededApi, create_rest_api, create_v2_api, put_steady_traffic, redeploy_rest_apis  # noqa: E402
from stack import (DEFINITION, HOME_ACCOUNT, METRICS_INTERVAL, REPO, EmbeddedStack, ExecutionReport,  # noqa: E402
                   StateTable, boto, due_window_end, latest_window_end)

SIZES = (100, 600, 2520)
# The largest region: API Gateway's fixed REST quotas (600 regional, 120 edge, 600 private) and 600 HTTP and
# 600 WebSocket APIs; smaller accounts keep its proportions.
LARGEST = {"REST": 1320, "HTTP": 600, "WEBSOCKET": 600}
REST_ENDPOINT_CYCLE = ["REGIONAL"] * 5 + ["EDGE"] + ["PRIVATE"] * 5  # 600 : 120 : 600
STAGES = ("prod", "dev")
# What a deployment runs with: the defaults of tasks/settings/src/lib.rs (which cdk/lib/settings.ts deploys).
APIGATEWAY_PACE = 5.0  # APIGATEWAY_REQUESTS_PER_SECOND
METRICS_FETCH_INTERVAL = 1800  # METRICS_FETCH_INTERVAL_SECONDS
CHANGE_BUFFER = 300  # CHANGE_BUFFER_SECONDS: an assets watermark is this far behind its run
RECONCILE_INTERVAL = 86_400  # RECONCILE_INTERVAL_SECONDS
CHANGES = 10
# Metrics the agent requests per API-stage and read (README, "What the metrics cost"): of an active one, and the probe
# of one that `ListMetrics` does not list (its request counters: `Count`, WebSocket `ConnectCount` and `MessageCount`).
METRICS_PER_API = {"REST": 5, "HTTP": 5, "WEBSOCKET": 6}
PROBES_PER_API = {"REST": 1, "HTTP": 1, "WEBSOCKET": 2}
# GetMetricData takes 500 queries, ListMetrics answers 500 metrics a page, listings 500 APIs a page.
PAGE = 500
# The vendor agent (ARCHITECTURE.md section 1): GetRestApis unpaged (25 APIs), per API its stages, per API-stage 7
# GetMetricStatistics calls; CloudTrail once per event name (6), with a 1 s pause per page.
VENDOR_VISIBLE_APIS = 25
VENDOR_METRICS_PER_API_STAGE = 7
VENDOR_LOOKUP_SEQUENCES = 6
PAYLOAD_LIMIT = 262_144
HISTORY_LIMIT = 25_000
# Each deployable zip: the task functions' about 2.5-2.9 MB; targets, which also serves the tick and so holds every
# task's code, 3.4 MB.
ZIP_GOAL_BYTES = 3_500_000
SECONDS_PER_MONTH = 30 * 24 * 3600
# us-east-1 list prices (aws.amazon.com/<service>/pricing), without free tiers.
PRICES = {
    "sfn_transition": 0.025 / 1000,
    "sfn_express_request": 1.00 / 1_000_000,
    "sfn_express_gb_second": 0.00001667,  # billed in 64-MB chunks, per 100 ms
    "lambda_request": 0.20 / 1_000_000,
    "lambda_arm64_gb_second": 0.0000133334,
    "cloudwatch_metric_requested": 0.01 / 1000,  # GetMetricData
    "cloudwatch_request": 0.01 / 1000,  # ListMetrics
    "dynamodb_write_unit": 0.625 / 1_000_000,  # on demand
    "dynamodb_read_unit": 0.125 / 1_000_000,
}
EXPRESS_MAX_SECONDS = 300
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class BenchmarkError(Exception):
    """A measured execution failed: its figures would mean nothing."""


# --- the account ------------------------------------------------------------------------------------------------


def account_mix(total: int) -> dict[str, int]:
    """`total` APIs split as the largest region splits them."""
    rest = round(total * LARGEST["REST"] / sum(LARGEST.values()))
    http = (total - rest) // 2
    return {"REST": rest, "HTTP": http, "WEBSOCKET": total - rest - http}


@dataclass
class Account:
    apis: dict[str, list[SeededApi]]  # by type


def seed_account(stack: EmbeddedStack, mix: dict[str, int]) -> Account:
    stages = {"prod": {"env": "production"}, "dev": {}}
    rest = [create_rest_api(stack.moto_url, f"rest-{i:04}", {"team": f"t{i % 7}"}, stages,
                            endpoint_type=REST_ENDPOINT_CYCLE[i % len(REST_ENDPOINT_CYCLE)])
            for i in range(mix["REST"])]
    with stack.aws_proxy.unmetered():  # v2 deployments live in the proxy; seeding is not the agent's traffic
        v2 = {kind: [create_v2_api(stack.aws_proxy.url, f"{kind.lower()}-{i:04}", kind, {"team": f"t{i % 7}"}, stages)
                     for i in range(mix[kind])] for kind in ("HTTP", "WEBSOCKET")}
    return Account({"REST": rest, **v2})


def make_ten_changes(stack: EmbeddedStack, account: Account) -> list[str]:
    """Two REST APIs created and deployed, two APIs deleted (REST and v2), the others redeployed to prod, round
    the API types; CloudTrail records each inside the next incremental window. Returns what changed."""
    apigw = boto("apigateway", stack.moto_url)
    v2 = boto("apigatewayv2", stack.aws_proxy.url)
    at = time.time() - 420  # inside the next window: it ends 300 s before now and overlaps 900 s back
    done, created = [], []
    for i in range(2):
        api = create_rest_api(stack.moto_url, f"new-{i}", {"team": "new"}, {"prod": {}, "dev": {}})
        stack.cloudtrail.add_event("CreateRestApi", eventTime=at, responseElements={"id": api.id})
        for stage in STAGES:
            stack.cloudtrail.add_event("CreateDeployment", eventTime=at,
                                       requestParameters={"restApiId": api.id, "stageName": stage})
        created.append(api)
        done.append(f"create {api.id}")
    for kind in ("REST", "HTTP" if account.apis["HTTP"] else "WEBSOCKET"):
        gone = account.apis[kind].pop(0)
        if kind == "REST":
            apigw.delete_rest_api(restApiId=gone.id)
            stack.cloudtrail.add_event("DeleteRestApi", eventTime=at, requestParameters={"restApiId": gone.id})
        else:
            with stack.aws_proxy.unmetered():
                v2.delete_api(ApiId=gone.id)
            stack.cloudtrail.add_event("DeleteApi", eventTime=at, requestParameters={"apiId": gone.id})
        done.append(f"delete {gone.id}")
    kinds = ("REST", "HTTP", "WEBSOCKET")
    round_the_types = [(kind, account.apis[kind][i]) for i in range(max(map(len, account.apis.values())))
                       for kind in kinds if i < len(account.apis[kind])]
    for kind, api in round_the_types[:CHANGES - len(done)]:
        if kind == "REST":
            redeploy_rest_apis(stack, [api.id], at=at)
        else:
            with stack.aws_proxy.unmetered():
                deployment = v2.create_deployment(ApiId=api.id, StageName="prod")["DeploymentId"]
            stack.cloudtrail.add_event("CreateDeployment", eventTime=at, requestParameters={
                "apiId": api.id, "stageName": "prod"}, responseElements={"deploymentId": deployment})
        done.append(f"redeploy {api.id}")
    account.apis["REST"] += created
    return done


def put_a_minute_of_traffic(stack: EmbeddedStack, account: Account, minute: int) -> None:
    """One minute of traffic on every API-stage, so that each is active and read."""
    put_steady_traffic(stack.moto_url, [api.name for api in account.apis["REST"]],
                       [api.id for api in account.apis["HTTP"]], [api.id for api in account.apis["WEBSOCKET"]],
                       list(STAGES), [minute])


def put_metrics_watermarks(stack: EmbeddedStack, position: int) -> None:
    state_table = StateTable(stack.moto_url)
    for stage in STAGES:
        state_table.put_metrics_watermark(stage, position)


# --- one measured execution -------------------------------------------------------------------------------------


@dataclass
class Operation:
    name: str
    report: ExecutionReport
    seconds: float
    calls: dict[tuple[str, str], int]  # (service, operation) -> calls at the wire, CloudTrail's included
    throttled: int
    metrics_requested: int  # GetMetricData queries: what CloudWatch bills
    dynamodb_units: tuple[float, float]  # (write, read) capacity units, from the items' sizes
    control_plane: dict[str, int]  # "METHOD /path" -> requests
    peak_rss: dict[str, int]  # binary -> bytes

    def service_calls(self, service: str, operation: str | None = None) -> int:
        return sum(n for (s, op), n in self.calls.items() if s == service and operation in (None, op))

    @property
    def control_plane_requests(self) -> int:
        return sum(self.control_plane.values())


def measure(stack: EmbeddedStack, name: str, execution_input: dict | None = None, fan_out: bool = False) -> Operation:
    stack.aws_proxy.reset()
    lookups_before = len(stack.cloudtrail.requests())
    control_plane_before = len(stack.apicp.requests())
    reset_peak_rss(stack)
    started = time.monotonic()
    report = stack.run(execution_input, fan_out=fan_out)
    seconds = time.monotonic() - started
    if not report.succeeded:
        raise BenchmarkError(f"{name}: {report.error}: {report.cause}\n{report.printed[-2000:]}")
    calls = stack.aws_proxy.counts()
    calls[("cloudtrail", "LookupEvents")] = len(stack.cloudtrail.requests()) - lookups_before
    forwarded = stack.aws_proxy.forwarded()
    queries = sum(metric_data_queries(call.body) for call in forwarded if call.operation == "GetMetricData")
    control_plane: dict[str, int] = {}
    for request in stack.apicp.requests()[control_plane_before:]:
        kind = f"{request['method']} {path_template(request['path'])}"
        control_plane[kind] = control_plane.get(kind, 0) + 1
    return Operation(name, report, seconds, {k: n for k, n in calls.items() if n},
                     sum(stack.aws_proxy.throttled().values()), queries, dynamodb_units(forwarded), control_plane,
                     peak_rss(stack))


def metric_data_queries(body: bytes) -> int:
    """The queries of one GetMetricData request, in whichever protocol it came: RPC v2 CBOR (the agent's SDK), JSON
    or awsQuery."""
    if body[:1] == b"{":
        return len(json.loads(body).get("MetricDataQueries", []))
    if b"MetricDataQueries.member." in body:
        return len(re.findall(rb"MetricDataQueries\.member\.\d+\.Id=", body))
    return len(CBORDecoder().decode(body).get("MetricDataQueries", [])) if body else 0


def path_template(path: str) -> str:
    """The path with its ids (segments holding a digit or `_`: versions, runtime and API ids) as `{id}`."""
    return "/".join("{id}" if re.search(r"[\d_]", segment) else segment for segment in path.split("?")[0].split("/"))


def dynamodb_units(forwarded) -> tuple[float, float]:
    """Write units (1 KB each) and strongly consistent read units (4 KB each) of the DynamoDB calls, from the sizes of
    the items written (the request) and read (the answer); JSON's overhead makes them slight overestimates."""
    writes = reads = 0.0
    for call in forwarded:
        if call.service != "dynamodb":
            continue
        if call.operation in DYNAMODB_WRITES:
            writes += max(1, math.ceil(len(call.body) / 1024))
        else:
            reads += max(1, math.ceil(call.answer_bytes / 4096))
    return writes, reads


def reset_peak_rss(stack: EmbeddedStack) -> None:
    for pid in stack.function_processes():
        with contextlib.suppress(OSError):  # an instance that just ended
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def peak_rss(stack: EmbeddedStack) -> dict[str, int]:
    """Each function's largest resident set since reset_peak_rss, over its instances."""
    peaks: dict[str, int] = {}
    for pid, binary in stack.function_processes().items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if found := re.search(r"^VmHWM:\s+(\d+) kB", status, re.M):
            peaks[binary] = max(peaks.get(binary, 0), int(found[1]) * 1024)
    return peaks


# --- one account size -------------------------------------------------------------------------------------------


@dataclass
class SizeResult:
    mix: dict[str, int]
    operations: dict[str, Operation] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


OPERATIONS = ("full sync", "idle incremental", "quiet metrics read", "metrics read", "10 changes", "10 changes again")


def bench_size(stack: EmbeddedStack, total: int, log=print) -> SizeResult:
    stack.reset_account()
    mix = account_mix(total)
    log(f"{total} APIs {mix} x {len(STAGES)} stages: seeding")
    account = seed_account(stack, mix)
    result = SizeResult(mix)
    # Metrics are read only when a fetch interval is due; until the metrics read below, none is.
    put_metrics_watermarks(stack, latest_window_end(time.time()))

    def measured(name: str, execution_input: dict | None = None) -> None:
        log(f"  {name}")
        result.operations[name] = measure(stack, name, execution_input)
        time.sleep(1.5)  # watermarks are whole seconds: the next run must have a CloudTrail window to read

    measured("full sync", {"mode": "full"})
    measured("idle incremental")

    def last_window_read() -> int:
        """The end of the last window the next run reads. It also ends before the stages' assets watermark (their
        catalogs' reach), which that run's assets branch moves, maybe before its metrics branch plans: so the next
        90 s are kept clear of a window boundary, and an idle run first moves the watermark into the same window."""
        since_boundary = (time.time() - CHANGE_BUFFER) % METRICS_INTERVAL
        if since_boundary > METRICS_INTERVAL - 90:
            time.sleep(METRICS_INTERVAL - since_boundary + 1)
        if not stack.run().succeeded:
            raise BenchmarkError("the idle run before a metrics read failed")
        time.sleep(1.5)
        synced = min(StateTable(stack.moto_url).item(stage)["assetsWatermark"] for stage in STAGES)
        return due_window_end(time.time(), synced)

    # No API-stage has had traffic yet, so `ListMetrics` lists none and the read probes each: what an account's idle
    # APIs cost on every read. It starts a window earlier than the read below, so that one plans afresh.
    put_metrics_watermarks(stack, last_window_read() - METRICS_FETCH_INTERVAL - METRICS_INTERVAL)
    measured("quiet metrics read")
    latest = last_window_read()
    # A minute of traffic in the read, and one an hour before, as an API in use has: CloudWatch lists a metric only
    # fifteen minutes after its first datapoint, and the read probes the APIs it does not list.
    put_a_minute_of_traffic(stack, account, latest - 3600)
    put_a_minute_of_traffic(stack, account, latest - 2 * METRICS_INTERVAL)
    # One fetch interval due: windows never sent (none was due before), each sent once.
    put_metrics_watermarks(stack, latest - METRICS_FETCH_INTERVAL)
    measured("metrics read")
    result.changes = make_ten_changes(stack, account)
    measured("10 changes")
    # The next run's window re-reads the last CHANGE_OVERLAP_SECONDS, for events CloudTrail delivers late, and skips
    # the ten changes' events as already applied.
    measured("10 changes again")
    return result


# --- bounds -----------------------------------------------------------------------------------------------------


def pages(items: int) -> int:
    return max(1, math.ceil(items / PAGE))


def full_sync_bound(mix: dict[str, int]) -> int:
    """Per management API its listing pages and one domain name listing (no custom domains here); a GetStages per
    API."""
    v2 = mix["HTTP"] + mix["WEBSOCKET"]
    return pages(mix["REST"]) + pages(v2) + 2 + sum(mix.values())


def changes_bound(changes: list[str]) -> int:
    """Per API created or redeployed, the API and its stages; per management API, its custom domain names (whose
    routes name the APIs); nothing for an API whose deletion CloudTrail reports."""
    return 2 * sum(1 for change in changes if not change.startswith("delete")) + 2


def metrics_read_bound(mix: dict[str, int]) -> tuple[int, int]:
    """(ListMetrics, GetMetricData) calls of one read of every stage, every API-stage active: per stage a listing of
    `Count` (REST and HTTP) and of `ConnectCount` and `MessageCount` (WebSocket), and the queries 500 to a call."""
    listings = pages(mix["REST"] + mix["HTTP"]) + (2 * pages(mix["WEBSOCKET"]) if mix["WEBSOCKET"] else 0)
    queries = sum(METRICS_PER_API[kind] * n for kind, n in mix.items())
    return len(STAGES) * listings, len(STAGES) * math.ceil(queries / PAGE)


def quiet_read_bound(mix: dict[str, int]) -> tuple[int, int]:
    """(ListMetrics, GetMetricData) calls of one read of every stage, no API-stage listed or active: per stage one
    empty page of each listing, and the probe of each API-stage's request counters 500 to a call (no read follows, as
    the probes find no traffic)."""
    listings = (1 if mix["REST"] + mix["HTTP"] else 0) + (2 if mix["WEBSOCKET"] else 0)
    probes = sum(PROBES_PER_API[kind] * n for kind, n in mix.items())
    return len(STAGES) * listings, len(STAGES) * math.ceil(probes / PAGE)


def vendor_per_run(mix: dict[str, int]) -> dict[str, int]:
    """The vendor agent's calls per run: it sees the first 25 REST APIs only."""
    seen = min(mix["REST"], VENDOR_VISIBLE_APIS)
    return {"apigateway": 1 + seen, "cloudwatch": VENDOR_METRICS_PER_API_STAGE * seen * len(STAGES),
            "cloudtrail": VENDOR_LOOKUP_SEQUENCES, "seen": seen}


# --- binaries ---------------------------------------------------------------------------------------------------


@dataclass
class ColdStart:
    ready_ms: list[float]  # exec -> the runtime's first GET /next
    answered_ms: list[float]  # exec -> its first answer
    error_type: str | None


def cold_start(binary: Path, env: dict[str, str], runs: int) -> ColdStart:
    """Starts `binary` `runs` times under a Runtime API served here and invokes it once with an input no task
    accepts, which it answers after building its dependencies (configuration, the AWS clients, the control plane
    secret): exec to first answer, the work of a task excluded."""
    ready, answered, error_type = [], [], None
    for _ in range(runs):
        api = RuntimeApi(UNACCEPTED_INPUT).start()
        started = time.perf_counter()
        process = subprocess.Popen([str(binary)], env={**env, **api.environment(binary.name)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not api.answered.wait(60):
                raise BenchmarkError(f"{binary.name} did not answer within 60 s")
        finally:
            process.kill()
            process.wait()
            api.stop()
        ready.append((api.ready_at - started) * 1000)
        answered.append((api.answered_at - started) * 1000)
        error_type = api.answer.get("errorType")
    return ColdStart(ready, answered, error_type)


# A JSON array: every task expects an object, so each answers InvalidInput once its dependencies are built.
UNACCEPTED_INPUT = [1, 2, 3]


class RuntimeApi:
    """The Lambda Runtime API for one invocation: the first GET /next gets `event`; later ones wait."""

    def __init__(self, event):
        self.event = event
        self.answered = threading.Event()
        self.ready_at = self.answered_at = 0.0
        self.answer: dict = {}
        self._stop = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if not self.path.endswith("/runtime/invocation/next") or api.ready_at:
                    api._stop.wait(60)  # the next invocation never comes
                    self.send_response(404)
                    self.end_headers()
                    return
                api.ready_at = time.perf_counter()
                body = json.dumps(api.event).encode()
                self.send_response(200)
                for name, value in {"Lambda-Runtime-Aws-Request-Id": "cold-start",
                                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                                    "Lambda-Runtime-Invoked-Function-Arn":
                                        "arn:aws:lambda:us-east-1:123456789012:function:bench",
                                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                                    "Content-Type": "application/json",
                                    "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if not api.answered.is_set():
                    api.answered_at = time.perf_counter()
                    api.answer = json.loads(body or b"{}") if body else {}
                    api.answered.set()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    def start(self) -> "RuntimeApi":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def environment(self, function: str) -> dict[str, str]:
        return {"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self._server.server_address[1]}",
                "AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function_memory_mb()),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}", "AWS_LAMBDA_LOG_STREAM_NAME": "bench"}

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def zipped_size(binary: Path) -> int:
    """The deployable as the CDK CLI zips an asset directory: the `bootstrap`, deflated at zlib's default level."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(binary, "bootstrap")
    return len(buffer.getvalue())


def deployables(directory: Path = REPO / "target" / "lambda") -> dict[str, tuple[int, int]]:
    """function -> (bootstrap bytes, zip bytes) of the arm64 builds `make lambdas` leaves; {} before one."""
    return {function: (path.stat().st_size, zipped_size(path)) for function in sorted(load_timeouts())
            if (path := directory / function / "bootstrap").is_file()}


def function_memory_mb() -> int:
    """The memory the CDK gives each function by default (cdk/lib/settings.ts)."""
    settings = (REPO / "cdk" / "lib" / "settings.ts").read_text()
    return int(re.search(r"^\s*functionMemoryMb: (\d+),", settings, re.M)[1])


# --- tasks ------------------------------------------------------------------------------------------------------


def task_binaries(definition: Path = DEFINITION, functions: Path = FUNCTIONS_FILE) -> dict[str, str]:
    """Each Task state's name -> the binary it invokes, walking Parallel branches and Map iterators."""
    binaries = {key: spec["binary"] for key, spec in json.loads(functions.read_text()).items() if not key.startswith("_")}
    found = {}

    def walk(states: dict) -> None:
        for name, state in states.items():
            if state["Type"] == "Task":
                found[name] = binaries[re.fullmatch(r"\$\{(\w+)\}", state["Resource"])[1]]
            for branch in state.get("Branches", []):
                walk(branch["States"])
            if processor := state.get("ItemProcessor") or state.get("Iterator"):
                walk(processor["States"])

    walk(json.loads(definition.read_text())["States"])
    return found


@dataclass
class TaskFigures:
    invocations: int = 0
    longest_ms: int = 0
    longest_in: str = ""
    input_bytes: int = 0
    output_bytes: int = 0


def task_figures(operations: dict[str, Operation]) -> dict[str, TaskFigures]:
    """Per Task state over the operations: invocations, the longest (and in which operation), the largest payloads."""
    tasks = task_binaries()
    figures = {name: TaskFigures() for name in tasks}
    for operation in operations.values():
        for state in operation.report.states:
            task = figures.get(state["name"])
            if task is None or state["status"] not in ("SUCCEEDED", "FAILED"):
                continue
            task.invocations += 1
            if state["ms"] > task.longest_ms:
                task.longest_ms, task.longest_in = state["ms"], operation.name
            task.input_bytes = max(task.input_bytes, state.get("inputBytes") or 0)
            task.output_bytes = max(task.output_bytes, state.get("outputBytes") or 0)
    return figures


# --- money ------------------------------------------------------------------------------------------------------


@dataclass
class RunCost:
    standard: float
    express: float | None  # None: the execution does not fit Express's 5 minutes
    lambda_: float
    cloudwatch: float
    dynamodb: float


def run_cost(operation: Operation, memory_mb: int) -> RunCost:
    tasks = task_binaries()
    invocations = [s for s in operation.report.states if s["name"] in tasks and s["status"] in ("SUCCEEDED", "FAILED")]
    gb_seconds = sum(s["ms"] for s in invocations) / 1000 * memory_mb / 1024
    express_seconds = math.ceil(operation.seconds * 10) / 10
    writes, reads = operation.dynamodb_units
    return RunCost(
        standard=operation.report.limits["stateTransitions"] * PRICES["sfn_transition"],
        express=None if operation.seconds > EXPRESS_MAX_SECONDS else
        PRICES["sfn_express_request"] + express_seconds * 64 / 1024 * PRICES["sfn_express_gb_second"],
        lambda_=len(invocations) * PRICES["lambda_request"] + gb_seconds * PRICES["lambda_arm64_gb_second"],
        cloudwatch=operation.metrics_requested * PRICES["cloudwatch_metric_requested"]
        + operation.service_calls("monitoring", "ListMetrics") * PRICES["cloudwatch_request"],
        dynamodb=writes * PRICES["dynamodb_write_unit"] + reads * PRICES["dynamodb_read_unit"],
    )


def runs_per_month(schedule_minutes: int) -> dict[str, int]:
    """How a month's executions split: a full sync per reconcile interval, a metrics read per fetch interval, the
    rest idle incremental runs (changes are rare and priced per run below)."""
    executions = SECONDS_PER_MONTH // (60 * schedule_minutes)
    full = SECONDS_PER_MONTH // RECONCILE_INTERVAL
    metrics = SECONDS_PER_MONTH // max(METRICS_FETCH_INTERVAL, 60 * schedule_minutes)
    return {"full sync": full, "metrics read": metrics, "idle incremental": executions - full - metrics}


def vendor_cloudwatch_per_month(mix: dict[str, int], schedule_minutes: int) -> float:
    """The vendor agent's `GetMetricStatistics` calls ($0.01 per 1,000 requests) on every run."""
    runs = SECONDS_PER_MONTH // (60 * schedule_minutes)
    return vendor_per_run(mix)["cloudwatch"] * runs * PRICES["cloudwatch_request"]


def monthly_cost(result: SizeResult, schedule_minutes: int, memory_mb: int) -> dict[str, float | None]:
    totals: dict[str, float | None] = {"standard": 0.0, "express": 0.0, "lambda_": 0.0, "cloudwatch": 0.0,
                                       "dynamodb": 0.0}
    for operation, runs in runs_per_month(schedule_minutes).items():
        cost = run_cost(result.operations[operation], memory_mb)
        for part in totals:
            value = getattr(cost, part)
            totals[part] = None if value is None or totals[part] is None else totals[part] + value * runs
    return totals


# --- many accounts and regions ----------------------------------------------------------------------------------

# `make bench`'s fan-out: 100 accounts x 3 regions, each target an account-region with one REST API deployed to one
# stage (the fan-out's own figures do not depend on a target's size; one target's are the sizes above).
TARGET_ACCOUNTS, TARGET_REGIONS = 100, ("us-east-1", "eu-west-1", "ap-southeast-2")
TARGET_EXTERNAL_ID = "bench"


@dataclass
class TargetsResult:
    accounts: int
    regions: int
    operations: dict[str, Operation] = field(default_factory=dict)
    # The schedule's ticks over every target once they are quiet, by name ("idle tick": nothing due; "periodic
    # tick": every target's metrics read and discovery due, done in-process).
    ticks: dict[str, Tick] = field(default_factory=dict)

    @property
    def targets(self) -> int:
        return self.accounts * self.regions


@dataclass
class Tick:
    """One tick: its answer, its wall time (the invocation's duration), the AWS calls at the wire."""

    report: dict
    seconds: float
    calls: dict[tuple[str, str], int]

    def per_target(self, service: str) -> float:
        return sum(n for (s, _), n in self.calls.items() if s == service) / self.report["targets"]


def bench_targets(release: bool, accounts: int = TARGET_ACCOUNTS, regions: tuple[str, ...] = TARGET_REGIONS,
                  log=print) -> TargetsResult:
    ids = [HOME_ACCOUNT] + [f"{300_000_000_000 + n:012d}" for n in range(1, accounts)]
    stack = EmbeddedStack(release=release, record_iam_uses=False).start({
        "TARGET_ACCOUNTS": ",".join(ids), "TARGET_REGIONS": ",".join(regions),
        "TARGET_ROLE_EXTERNAL_ID": TARGET_EXTERNAL_ID,
        # No metrics window is due before the fetch interval: the second run is idle in both branches.
        "METRICS_BACKFILL_SECONDS": "0"})
    result = TargetsResult(accounts, len(regions))
    try:
        log(f"{accounts} accounts x {len(regions)} regions: seeding")
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HOME_ACCOUNT}:root"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": TARGET_EXTERNAL_ID}}}]})
        for account in ids:
            if account != HOME_ACCOUNT:
                boto("iam", stack.moto_url, account).create_role(RoleName="ApicpAgentReader",
                                                                  AssumeRolePolicyDocument=trust)
            for region in regions:
                create_rest_api(stack.moto_url, f"api-{account[-3:]}", {}, {"prod": {}}, account=account, region=region)
        for name in ("first run: every target's full sync", "idle run"):
            log(f"  {name}")
            result.operations[name] = measure(stack, name, fan_out=True)
            time.sleep(1.5)
        log("  idle tick")
        result.ticks["idle tick"] = measure_tick(stack)
        # Every target's periodic work due at once: its discovery an hour old, a fetch interval of metrics windows.
        state_table, now = StateTable(stack.moto_url), time.time()
        for account in ids:
            for region in regions:
                prefix = "" if (account, region) == (HOME_ACCOUNT, stack.function_env["AWS_REGION"]) \
                    else f"{account}/{region}/"
                state_table.put_number(f"{prefix}#discovery", "discoveredAt", int(now) - 3700)
                # A fetch interval before the last window the tick may read: windows end before the stage's assets
                # watermark too, which can be a window behind the latest one (CI of 667de4d met it).
                assets_watermark = state_table.item(f"{prefix}prod")["assetsWatermark"]
                state_table.put_metrics_watermark(f"{prefix}prod", due_window_end(now, assets_watermark) - 1800)
        time.sleep(1.5)
        log("  periodic tick")
        result.ticks["periodic tick"] = measure_tick(stack)
    finally:
        stack.stop()
    return result


# What a quiet target does per month at the default settings besides its idle minutes: a metrics read every
# METRICS_FETCH_INTERVAL_SECONDS (1,800) and a discovery of its stages every DISCOVERY_INTERVAL_SECONDS (3,600, with
# STAGES=*), both in the tick for a small target; a full reconciliation every RECONCILE_INTERVAL_SECONDS (86,400),
# handed over to the workflow.
PERIODIC_IN_TICK = SECONDS_PER_MONTH // 1800 + SECONDS_PER_MONTH // 3600
HANDOVERS = SECONDS_PER_MONTH // 86400


def measure_tick(stack: EmbeddedStack) -> Tick:
    """One tick over quiet targets, which must all be served in-process."""
    stack.aws_proxy.reset()
    lookups_before = len(stack.cloudtrail.requests())
    started = time.monotonic()
    tick = stack.tick()
    seconds = time.monotonic() - started
    calls = {k: n for k, n in stack.aws_proxy.counts().items() if n}
    calls[("cloudtrail", "LookupEvents")] = len(stack.cloudtrail.requests()) - lookups_before
    if tick.execution is not None or tick.report["idle"] != tick.report["targets"]:
        raise BenchmarkError(f"the tick handed targets over: {tick.report}")
    return Tick(tick.report, seconds, calls)


def idle_target_cost_per_month(idle_run: Operation, idle_tick: Tick, periodic_tick: Tick, memory_mb: int,
                               schedule_minutes: int = 1) -> dict:
    """A quiet target's orchestration per month: its share of the idle tick's invocation on its idle runs, of the
    periodic tick's (every target's metrics read and discovery at once: an upper bound) on the runs with periodic
    work, and, for each run it hands over (the daily reconciliation), a run of the workflow costing what the idle
    fan-out run cost per target (its share of the fan-out's transitions and its own run's, Lambda invocations and
    time). `ungated` is what every run would cost as a run of the workflow, as before the tick."""
    targets = idle_tick.report["targets"]
    limits = idle_run.report.limits
    children = limits["children"]
    runs = SECONDS_PER_MONTH // (60 * schedule_minutes)
    periodic = min(PERIODIC_IN_TICK, runs)
    handovers = min(HANDOVERS, runs - periodic)
    transitions = (limits["stateTransitions"] + children["stateTransitions"]) / targets
    invocations = (limits["lambdaInvocations"] + children["lambdaInvocations"]) / targets
    gb_seconds = (limits["lambdaMs"] + children["lambdaMs"]) / 1000 / targets * memory_mb / 1024
    workflow_run = (transitions * PRICES["sfn_transition"] + invocations * PRICES["lambda_request"]
                    + gb_seconds * PRICES["lambda_arm64_gb_second"])

    def share(tick: Tick) -> float:
        return (PRICES["lambda_request"] + tick.seconds * memory_mb / 1024 * PRICES["lambda_arm64_gb_second"]) / targets

    ticks = (runs - periodic - handovers) * share(idle_tick) + periodic * share(periodic_tick)
    return {"transitions": transitions, "invocations": invocations, "periodic": periodic, "handovers": handovers,
            "tick": ticks, "handed_over": handovers * workflow_run, "total": ticks + handovers * workflow_run,
            "ungated": runs * workflow_run}


# Push mode (README "Push mode"). AWS publishes no latency for CloudTrail's delivery of "AWS API Call via CloudTrail"
# events to EventBridge, only that it is best effort (EventBridge User Guide, "Events from AWS services"); the
# benchmark draws each event's delay uniformly from this range, an assumption on the slow side of the seconds to a
# minute such events are commonly seen to take. LookupEvents' own delivery (about 5 minutes, CloudTrail User Guide)
# is what the poll's CHANGE_BUFFER_SECONDS waits for.
PUSH_DELAY = (15.0, 60.0)
PUSH_BURSTS, PUSH_CHANGES_PER_BURST = 3, 20
PUSH_BATCH_WINDOW = 5  # PUSH_BATCH_WINDOW_SECONDS' default
PUSH_POLL_MINUTES = 15  # PUSH_POLL_MINUTES' default
# Lambda's SQS event source mapping long-polls an empty queue (20 s waits) with at least 5 pollers (Lambda Developer
# Guide, "Using Lambda with Amazon SQS"): about 900 ReceiveMessage requests an hour, at SQS's $0.40 per million.
SQS_IDLE_RECEIVES_PER_HOUR = 5 * 3 * 60
SQS_REQUEST = 0.40 / 1_000_000
IDLE_TICKS = 5


@dataclass
class PushResult:
    latencies: list[float] = field(default_factory=list)  # seconds, from the call to the control plane holding it
    executions: list[dict] = field(default_factory=list)  # per push execution: events, transitions, Lambda ms
    batches: int = 0
    tick_ms: dict[str, float] = field(default_factory=dict)  # median idle tick: "poll" (CloudTrail read) and "push"


def bench_push(release: bool, log=print) -> PushResult:
    """Bursts of changes through the push path with the simulated delay: each change's latency to the control plane;
    then a quiet target's tick with and without the CloudTrail read push mode skips."""
    stack = EmbeddedStack(release=release, record_iam_uses=False, push_delay=PUSH_DELAY).start({
        "PUSH_MODE": "true", "PUSH_POLL_MINUTES": str(PUSH_POLL_MINUTES), "METRICS_BACKFILL_SECONDS": "0"})
    result = PushResult()
    try:
        stack.enable_push(visibility_timeout=180, batch_window=PUSH_BATCH_WINDOW)
        stack.cloudtrail.add_trail("management-events")
        apis = [create_rest_api(stack.moto_url, f"api-{i}", {}, {"prod": {}}) for i in range(PUSH_CHANGES_PER_BURST)]
        if not stack.run({}).succeeded:
            raise BenchmarkError("the first sync failed")
        apigw = boto("apigateway", stack.moto_url)
        runtime = f"{HOME_ACCOUNT}_{stack.function_env['AWS_REGION']}_prod"
        for burst in range(PUSH_BURSTS):
            log(f"push: burst {burst + 1} of {PUSH_BURSTS}, {PUSH_CHANGES_PER_BURST} changes")
            made: dict[str, float] = {}
            description = f"burst {burst}"
            for api in apis:
                patch = [{"op": "replace", "path": "/description", "value": description}]
                apigw.update_rest_api(restApiId=api.id, patchOperations=patch)
                made[api.id] = time.time()
                stack.cloudtrail.add_event("UpdateRestApi", eventTime=made[api.id],
                                           requestParameters={"restApiId": api.id, "patchOperations": patch})
            deadline = time.monotonic() + PUSH_DELAY[1] + 240
            while made and time.monotonic() < deadline:
                held = stack.apicp.state()["apis"].get(runtime, {})
                now = time.time()
                for api_id in [a for a in made if held.get(f"{a}_prod", {}).get("description") == description]:
                    result.latencies.append(now - made.pop(api_id))
                time.sleep(0.2)
            if made:
                raise BenchmarkError(f"{len(made)} pushed changes never reached the control plane: "
                                     f"{stack.push.errors()}")
        stack.push.wait_for(lambda p: all(e.ended for e in p.executions()), timeout=120, what="push executions ended")
        for execution in stack.push.executions():
            limits = execution.report.limits
            result.executions.append({"events": len(execution.input["pushed"]), "status": execution.status,
                                      "transitions": limits["stateTransitions"],
                                      "lambdaMs": limits["lambdaMs"], "lambdaInvocations": limits["lambdaInvocations"]})
        result.batches = len(stack.push.batches())
        log("push: idle ticks, with and without the CloudTrail read")
        table = StateTable(stack.moto_url)
        for kind in ("push", "poll"):
            samples = []
            for _ in range(IDLE_TICKS):
                if kind == "poll":  # as a poll-only deployment: CloudTrail read on every tick
                    table.put_number("prod", "assetsReadAt", int(time.time()) - 3600)
                time.sleep(1.1)
                started = time.monotonic()
                tick = stack.tick()
                samples.append((time.monotonic() - started) * 1000)
                if tick.execution is not None:
                    raise BenchmarkError(f"an idle tick handed its target over: {tick.report}")
            result.tick_ms[kind] = statistics.median(samples)
    finally:
        stack.stop()
    return result


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def idle_hour_costs(result: PushResult, memory_mb: int) -> dict[str, float]:
    """One quiet target's idle hour at a 1-minute schedule: poll only (CloudTrail read by every tick), and push mode
    (CloudTrail read every PUSH_POLL_MINUTES, the queue's empty receives)."""
    def tick(ms: float) -> float:
        return PRICES["lambda_request"] + ms / 1000 * memory_mb / 1024 * PRICES["lambda_arm64_gb_second"]

    polls = 60 // PUSH_POLL_MINUTES
    return {"poll": 60 * tick(result.tick_ms["poll"]),
            "push ticks": (60 - polls) * tick(result.tick_ms["push"]) + polls * tick(result.tick_ms["poll"]),
            "push queue": SQS_IDLE_RECEIVES_PER_HOUR * SQS_REQUEST}


def micro_dollars(value: float) -> str:
    """Fractions of a cent, as an idle hour costs."""
    return f"${value:.6f}"


def render_push(result: PushResult, memory_mb: int) -> list[str]:
    latencies = result.latencies
    events = sum(e["events"] for e in result.executions)
    out = ["## Push mode\n",
           f"{len(latencies)} changes in {PUSH_BURSTS} bursts of {PUSH_CHANGES_PER_BURST} (each an `UpdateRestApi` of a "
           f"different API, made within a second), through the push path of the local stack: CloudTrail's record "
           f"handed to EventBridge (moto) after a delay drawn uniformly from {PUSH_DELAY[0]:g}-{PUSH_DELAY[1]:g} s "
           f"(AWS publishes no figure for this delivery, only that it is best effort: this range is our assumption, "
           f"on the slow side), the rule's queue, the event source mapping (batches of up to 100, a "
           f"{PUSH_BATCH_WINDOW} s window), the push starter and the execution it starts. Latency: from the API "
           f"Gateway call to the control plane holding the new description (sampled every 0.2 s). Taken "
           f"{datetime.date.today().isoformat()} (`make bench`, or alone: `python tests/stack/benchmarks.py --release "
           f"--push-only --write docs/benchmarks.md`).\n",
           "| changes | p50 | p95 | max | executions | events per execution | batches |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
           f"| {len(latencies)} | {percentile(latencies, 0.5):.1f} s | {percentile(latencies, 0.95):.1f} s | "
           f"{max(latencies):.1f} s | {len(result.executions)} | {events / max(1, len(result.executions)):.1f} | "
           f"{result.batches} |", ""]
    transitions = statistics.median(e["transitions"] for e in result.executions)
    lambda_ms = statistics.median(e["lambdaMs"] for e in result.executions)
    invocations = statistics.median(e["lambdaInvocations"] for e in result.executions)
    per_execution = (transitions * PRICES["sfn_transition"] + invocations * PRICES["lambda_request"]
                     + lambda_ms / 1000 * memory_mb / 1024 * PRICES["lambda_arm64_gb_second"])
    out.append(f"A push execution (median): {transitions:.0f} state transitions, {invocations:.0f} Lambda invocations, "
               f"{lambda_ms / 1000:.1f} s of Lambda time: {dollars(per_execution)}, plus the queue's three requests "
               f"per event and the starter's invocation. Events that arrive together share an execution: here "
               f"{len(result.executions)} for {len(latencies)} changes, as the simulated delays spread each burst's "
               f"events over {PUSH_DELAY[1] - PUSH_DELAY[0]:g} s and the mapping's window is "
               f"{PUSH_BATCH_WINDOW} s (one poller; AWS's five may split a batch further).\n")
    costs = idle_hour_costs(result, memory_mb)
    push_total = costs["push ticks"] + costs["push queue"]
    out.append(f"An idle hour of one target at the default 1-minute schedule, from the median idle tick measured here "
               f"({result.tick_ms['poll']:.0f} ms reading CloudTrail, {result.tick_ms['push']:.0f} ms without: "
               f"`LookupEvents` of a quiet window is one short call, free of charge) and Lambda's and SQS's list "
               f"prices; the rule and EventBridge's delivery of AWS service events cost nothing. Push mode keeps the "
               f"1-minute schedule (metrics and heartbeats need a clock) and reads CloudTrail every "
               f"{PUSH_POLL_MINUTES} minutes; its queue is long-polled by Lambda's event source mapping whether or "
               f"not anything changes:\n")
    out.append("| mode | ticks | queue (empty long polls) | hour | month | a change reaches the control plane |")
    out.append("| --- | ---: | ---: | ---: | ---: | --- |")
    out.append(f"| poll only | {micro_dollars(costs['poll'])} | — | {micro_dollars(costs['poll'])} | "
               f"{dollars(costs['poll'] * 720)} | after the 5-minute buffer and the next run: 6 minutes or more |")
    out.append(f"| push | {micro_dollars(costs['push ticks'])} | {micro_dollars(costs['push queue'])} | "
               f"{micro_dollars(push_total)} | {dollars(push_total * 720)} | p95 {percentile(latencies, 0.95):.0f} s, "
               f"the poll as the safety net |")
    out.append("")
    out.append("The queue's polls are per deployment, not per target: a deployment of many targets pays them once, "
               "and each target's idle ticks cost what they cost without push.\n")
    return out


def render_targets(result: TargetsResult, memory_mb: int) -> list[str]:
    out = [f"## Many accounts and regions: {result.accounts} accounts x {result.regions} regions\n",
           f"The fan-out (`statemachine/targets.asl.json`) over {number(result.targets)} targets, each an account-region "
           "with one REST API, every account but the deployment's own reached through its member role; each "
           "target's run is an execution of the workflow of its own (the local runner runs each as a process of its "
           "own, with its own history and payload limits). Per target: the AWS calls at the wire divided by the "
           "targets.\n",
           "| run | wall time | fan-out history | fan-out transitions | fan-out largest payload | runs | largest run "
           "history | largest run payload | per target: API Gateway, CloudTrail, STS, DynamoDB calls | per target: "
           "control plane requests |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for name, operation in result.operations.items():
        limits, children = operation.report.limits, operation.report.limits["children"]
        per = lambda service: operation.service_calls(service) / result.targets  # noqa: E731
        largest = max(limits["largestInput"]["bytes"], limits["largestOutput"]["bytes"])
        out.append(f"| {name} | {operation.seconds:,.0f} s | {number(limits['historyEvents'])} | "
                   f"{number(limits['stateTransitions'])} | {kib(largest)} | {children['executions']} "
                   f"({children['failed']} failed) | {number(children['maxHistoryEvents'])} | "
                   f"{kib(children['largestPayloadBytes'])} | {per('apigateway'):.1f}, {per('cloudtrail'):.1f}, "
                   f"{per('sts'):.2f}, {per('dynamodb'):.1f} | "
                   f"{operation.control_plane_requests / result.targets:.1f} |")
    out.append("")
    idle = result.operations["idle run"]
    idle_tick, periodic_tick = result.ticks["idle tick"], result.ticks["periodic tick"]
    for name, tick in result.ticks.items():
        out.append(f"The schedule's {name} over the {number(result.targets)} quiet targets: {tick.seconds:,.1f} s in "
                   f"one invocation ({tick.seconds / result.targets * 1000:,.0f} ms per target, every target "
                   f"in-process, no execution started); per target {tick.per_target('cloudtrail'):.1f} CloudTrail, "
                   f"{tick.per_target('dynamodb'):.1f} DynamoDB, {tick.per_target('sts'):.2f} STS, "
                   f"{tick.per_target('apigateway'):.1f} API Gateway and {tick.per_target('monitoring'):.1f} "
                   "CloudWatch calls.\n")
    out.append("A quiet target's orchestration per month: its share of the idle tick's invocation on its idle runs "
               f"and of the periodic tick's on the {number(PERIODIC_IN_TICK)} runs with a metrics read (every 30 "
               "minutes) or a discovery (every hour) due ($0.20 per million requests, "
               f"{memory_mb} MB x $0.0000133334 per GB-second); on the {HANDOVERS} runs a month it hands over (the "
               "daily reconciliation), a run of the workflow as the idle fan-out run costs per target: (its share "
               "of the fan-out's transitions + its run's) x $0.025 per 1,000 + its Lambda invocations and time. The "
               "goal is $0.50.\n")
    out.append("| schedule | ticks | handed-over runs | their cost | total per quiet target | every run a workflow "
               "run (before the tick) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for minutes in (1, 5, 15):
        cost = idle_target_cost_per_month(idle, idle_tick, periodic_tick, memory_mb, minutes)
        out.append(f"| every {minutes} min | {dollars(cost['tick'])} | {number(cost['handovers'])} | "
                   f"{dollars(cost['handed_over'])} | {dollars(cost['total'])} | {dollars(cost['ungated'])} |")
    out.append("")
    return out


# --- the report -------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {memory_kb / 1024 ** 2:.0f} GiB, "
            f"Linux {platform.release()}, {rustc}")


def number(value: float) -> str:
    return f"{value:,.0f}"


def kib(value: int) -> str:
    return f"{value / 1024:,.1f} KiB"


def mb(value: int) -> str:
    return f"{value / 1e6:.2f} MB"


def dollars(value: float | None) -> str:
    if value is None:
        return "does not fit"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"  # under a cent: 4 decimals


def render_binaries(cold: dict[str, ColdStart], zips: dict[str, tuple[int, int]]) -> list[str]:
    """The report's section on each function's cold start and zip."""
    out = []
    out.append("## Binaries\n")
    out.append("Cold start: the binary started under a Runtime API served by the benchmark (`cargo lambda watch` "
               "starts functions through `cargo run`, whose own checks would dominate) and invoked with an input no "
               "task accepts: exec to the runtime's first `next` request, and to its answer after building the "
               "dependencies (configuration, AWS clients, the control plane secret from Secrets Manager on the local "
               "stack). Medians of the runs, host build. Zip: the arm64 release `bootstrap` that `make lambdas` "
               f"builds, deflated as the CDK zips an asset; goal under {mb(ZIP_GOAL_BYTES)}.\n")
    out.append("| function | ready | first answer | answered | binary (arm64) | zip |")
    out.append("| --- | ---: | ---: | --- | ---: | ---: |")
    for function in sorted(set(cold) | set(zips)):
        start = cold.get(function)
        size, zipped = zips.get(function, (0, 0))
        out.append(f"| {function} | "
                   + (f"{statistics.median(start.ready_ms):.0f} ms | {statistics.median(start.answered_ms):.0f} ms | "
                      f"{start.error_type} | " if start else "— | — | — | ")
                   + (f"{mb(size)} | {mb(zipped)} |" if size else "not built (`make lambdas`) | — |"))
    out.append("")
    return out


def render(results: dict[int, SizeResult], cold: dict[str, ColdStart], zips: dict[str, tuple[int, int]],
           release: bool, command: str) -> str:
    memory_mb = function_memory_mb()
    out = ["# Benchmarks\n",
           f"Taken {datetime.date.today().isoformat()} on {machine()}; functions built "
           f"{'release' if release else 'debug'} for this host, under `cargo lambda watch` behind the stack's Lambda "
           f"adapter. Command: `{command}`.\n"]

    out.append("## AWS calls per run, at the wire\n")
    out.append("Measured / lower bound. API Gateway bound: a listing page per 500 APIs and management API, one domain "
               "name listing each, a `GetStages` per API; after changes, per API created or redeployed the API and its "
               "stages, and each management API's domain names (a deleted API needs no call), and none for changes already applied; incremental runs: one "
               "`LookupEvents`; metrics read "
               "(`ListMetrics` + `GetMetricData`): per stage a `Count` listing (REST and HTTP) and a `ConnectCount` "
               "and a `MessageCount` listing (WebSocket) per 500 APIs, and the 5 (WebSocket 6) metrics of every "
               "active API-stage 500 to a `GetMetricData` call; a quiet read, an empty page of each listing and a probe of "
               "the request counters (`Count`, WebSocket `ConnectCount` and `MessageCount`) of every API-stage "
               "not listed, 500 to a call. The vendor agent makes the same calls on every run: "
               "1 + N + 7S (N APIs it sees, S API-stages) and 6 `LookupEvents` sequences with a 1 s pause per "
               "page, and it sees the first 25 REST APIs only.\n")
    out.append("| APIs | run | API Gateway | CloudTrail | CloudWatch | DynamoDB | other AWS | throttled | "
               "vendor agent per run |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for total, result in results.items():
        vendor = vendor_per_run(result.mix)
        listings, fetches = metrics_read_bound(result.mix)
        for name, operation in result.operations.items():
            apigateway = operation.service_calls("apigateway")
            bound = (full_sync_bound(result.mix) if name == "full sync" else
                     changes_bound(result.changes) if name == "10 changes" else 0)
            lookups = operation.service_calls("cloudtrail")
            cloudwatch = operation.service_calls("monitoring")
            cloudwatch_bound = (listings + fetches if name == "metrics read" else
                                sum(quiet_read_bound(result.mix)) if name == "quiet metrics read" else 0)
            lookup_bound = "0" if name == "full sync" else "1"
            other = sum(n for (service, _), n in operation.calls.items()
                        if service not in ("apigateway", "cloudtrail", "monitoring", "dynamodb"))
            out.append(f"| {number(total)} | {name} | {number(apigateway)} / {number(bound)} | {lookups} / {lookup_bound} | "
                       f"{number(cloudwatch)} / {number(cloudwatch_bound)} | {number(operation.service_calls('dynamodb'))} | "
                       f"{other} | {operation.throttled} | API Gateway {vendor['apigateway']}, CloudWatch "
                       f"{number(vendor['cloudwatch'])}, CloudTrail ≥ {vendor['cloudtrail']} "
                       f"({vendor['seen']} of {number(total)} APIs) |")
    out.append("")

    out.append("## Full sync at the API Gateway pace\n")
    out.append(f"The agent paces its API Gateway calls at {APIGATEWAY_PACE:g} requests/s "
               "(`APIGATEWAY_REQUESTS_PER_SECOND`); the floor is its calls divided by that pace.\n")
    out.append("| APIs | API Gateway calls | floor | execution | EnsureRuntime | AssetsListChanges |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for total, result in results.items():
        full = result.operations["full sync"]
        longest = {name: max((s["ms"] for s in full.report.states if s["name"] == name), default=0)
                   for name in ("EnsureRuntime", "AssetsListChanges")}
        calls = full.service_calls("apigateway")
        out.append(f"| {number(total)} | {number(calls)} | {calls / APIGATEWAY_PACE:,.1f} s | {full.seconds:,.1f} s | "
                   f"{longest['EnsureRuntime'] / 1000:,.1f} s | {longest['AssetsListChanges'] / 1000:,.1f} s |")
    out.append("")

    out.append("## Control plane requests per run\n")
    out.append("| APIs | run | requests | by kind |")
    out.append("| ---: | --- | ---: | --- |")
    for total, result in results.items():
        for name, operation in result.operations.items():
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(operation.control_plane.items()))
            out.append(f"| {number(total)} | {name} | {number(operation.control_plane_requests)} | {kinds} |")
    out.append("")

    out.append("## Tasks\n")
    out.append(f"Per Task state over the runs above: the longest invocation, the peak RSS of its function's process "
               f"(the largest over the runs; Lambda gives each {memory_mb} MB), the largest input and output against "
               f"Step Functions' {kib(PAYLOAD_LIMIT)}.\n")
    out.append("| APIs | task | invocations | longest | in | peak RSS | largest input | largest output |")
    out.append("| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    tasks = task_binaries()
    for total, result in results.items():
        rss: dict[str, int] = {}
        for operation in result.operations.values():
            for binary, peak in operation.peak_rss.items():
                rss[binary] = max(rss.get(binary, 0), peak)
        for name, task in task_figures(result.operations).items():
            if not task.invocations:
                continue
            peak = rss.get(tasks[name])
            out.append(f"| {number(total)} | {name} | {task.invocations} | {task.longest_ms / 1000:,.2f} s | "
                       f"{task.longest_in} | {f'{peak / 2 ** 20:.1f} MiB' if peak else '—'} | "
                       f"{kib(task.input_bytes)} | {kib(task.output_bytes)} |")
    out.append("")
    out.append(f"History events and state transitions of each execution (limit: {number(HISTORY_LIMIT)} events):\n")
    out.append("| APIs | " + " | ".join(OPERATIONS) + " |")
    out.append("| ---: |" + " ---: |" * len(OPERATIONS))
    for total, result in results.items():
        cells = [f"{number(o.report.limits['historyEvents'])} events, {number(o.report.limits['stateTransitions'])} "
                 f"transitions" for o in result.operations.values()]
        out.append(f"| {number(total)} | " + " | ".join(cells) + " |")
    out.append("")

    out += render_binaries(cold, zips)

    out.append("## Cost per month\n")
    out.append(f"At list prices (us-east-1, no free tier): Step Functions Standard $0.025 per 1,000 state transitions; "
               f"Express $1.00 per million executions and $0.00001667 per GB-second in 64 MB; Lambda arm64 "
               f"$0.20 per million requests and $0.0000133334 per GB-second at {memory_mb} MB (the measured task "
               f"durations); CloudWatch $0.01 per 1,000 metrics requested by `GetMetricData` and per 1,000 "
               f"`ListMetrics` calls; DynamoDB on demand $0.625 per million write and $0.125 per million read units "
               f"(units from the items' sizes). A month: a full sync a day (`RECONCILE_INTERVAL_SECONDS`), a metrics "
               f"read every {METRICS_FETCH_INTERVAL // 60} minutes (`METRICS_FETCH_INTERVAL_SECONDS`), idle "
               f"incremental runs otherwise; each change adds about what the 10-change run costs over an idle one. "
               f"Express cannot run an execution longer than 5 minutes: where the full sync takes longer, it does "
               f"not fit. API Gateway's and CloudTrail's management reads, Secrets Manager within its cache and "
               f"EventBridge Scheduler within its 14 million free invocations cost nothing here. The vendor agent's "
               f"CloudWatch bill: {VENDOR_METRICS_PER_API_STAGE} `GetMetricStatistics` calls per API-stage it sees and "
               f"run. Every run is priced here as an execution of the workflow, as before the schedule's tick: the "
               f"tick serves idle runs and one-chunk metrics reads in one Lambda invocation instead, which takes "
               f"nearly all of the Step Functions column away (\"Many accounts and regions\" below prices a quiet "
               f"target with the tick).\n")
    out.append("| APIs | schedule | Step Functions Standard | Step Functions Express | Lambda | CloudWatch | DynamoDB | "
               "total with Standard | vendor agent's CloudWatch (25 APIs) |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for total, result in results.items():
        for minutes in (1, 5):
            cost = monthly_cost(result, minutes, memory_mb)
            with_standard = sum(cost[part] for part in ("standard", "lambda_", "cloudwatch", "dynamodb"))
            out.append(f"| {number(total)} | every {minutes} min | {dollars(cost['standard'])} | "
                       f"{dollars(cost['express'])} | {dollars(cost['lambda_'])} | {dollars(cost['cloudwatch'])} | "
                       f"{dollars(cost['dynamodb'])} | {dollars(with_standard)} | "
                       f"{dollars(vendor_cloudwatch_per_month(result.mix, minutes))} |")
    out.append("")
    out.append("The totals above have every API-stage active. Per API-stage and month, from the two metrics reads: an "
               "active one is read in full; one that `ListMetrics` does not list (quiet for 3 hours, new for up to 15 "
               "minutes, or without data for two weeks) is probed, its request counters queried once per read, and "
               "read in full only when the probe finds traffic. Before the probe, such an API-stage cost nothing "
               "and a new API's first quarter hour of traffic was reported as zero.\n")
    out.append("| APIs | active API-stage | probed API-stage without traffic | metrics requested per read (active / "
               "probed) |")
    out.append("| ---: | ---: | ---: | ---: |")
    reads = runs_per_month(1)["metrics read"]
    for total, result in results.items():
        api_stages = sum(result.mix.values()) * len(STAGES)
        active, quiet = result.operations["metrics read"], result.operations["quiet metrics read"]
        per_api_stage = {name: o.metrics_requested / api_stages for name, o in (("active", active), ("quiet", quiet))}
        out.append(f"| {number(total)} | "
                   f"{dollars(per_api_stage['active'] * reads * PRICES['cloudwatch_metric_requested'])} | "
                   f"{dollars(per_api_stage['quiet'] * reads * PRICES['cloudwatch_metric_requested'])} | "
                   f"{per_api_stage['active']:.2f} / {per_api_stage['quiet']:.2f} |")
    out.append("")
    out.append("Per 1,000 runs of each kind:\n")
    out.append("| APIs | run | Standard | Express | Lambda | CloudWatch (metrics requested per run) | "
               "DynamoDB (write / read units per run) |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for total, result in results.items():
        for name, operation in result.operations.items():
            cost = run_cost(operation, memory_mb)
            writes, reads = operation.dynamodb_units
            per_1000 = {part: None if value is None else value * 1000 for part, value in vars(cost).items()}
            out.append(f"| {number(total)} | {name} | {dollars(per_1000['standard'])} | "
                       f"{dollars(per_1000['express'])} | {dollars(per_1000['lambda_'])} | "
                       f"{dollars(per_1000['cloudwatch'])} ({number(operation.metrics_requested)}) | "
                       f"{dollars(per_1000['dynamodb'])} ({number(writes)} / {number(reads)}) |")
    out.append("")
    return "\n".join(out)


def run(sizes: list[int], release: bool, cold_start_runs: int, log=print) -> tuple[dict, dict, dict]:
    stack = EmbeddedStack(release=release).start()
    try:
        if not (stack.moto_url and stack.apicp):
            raise BenchmarkError("the benchmarks run on the embedded stack only: unset AWS_ENDPOINT_URL, "
                                 "AWS_ACCESS_KEY_ID, AWS_PROFILE and APICP_URL")
        results = {size: bench_size(stack, size, log) for size in sizes}
        env = {"PATH": os.environ.get("PATH", ""), **stack.function_env}
        log("cold starts")
        cold = {function: cold_start(stack.binary(function), env, cold_start_runs) for function in load_timeouts()}
    finally:
        stack.stop()
    return results, cold, deployables()


def raw_figures(results: dict[int, SizeResult]) -> dict:
    return {str(total): {"mix": result.mix, "changes": result.changes, "operations": {
        name: {"seconds": o.seconds, "calls": {f"{s} {op}": n for (s, op), n in sorted(o.calls.items())},
               "controlPlane": o.control_plane, "peakRss": o.peak_rss, "limits": o.report.limits,
               "states": o.report.states} for name, o in result.operations.items()}} for total, result in results.items()}


def replace_section(report: str, heading: str, section: str) -> str:
    """`report` with its `heading` section (up to the next `## ` heading) replaced by `section`, or it appended."""
    start = report.find(heading + "\n")
    if start < 0:
        return report.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    end = report.find("\n## ", start + len(heading))
    rest = report[end + 1:] if end >= 0 else ""
    return report[:start] + section.rstrip("\n") + "\n\n" + rest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="APIs per account, comma-separated")
    parser.add_argument("--release", action="store_true", help="run release builds of the functions")
    parser.add_argument("--cold-starts", type=int, default=5, help="cold starts per binary")
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument("--raw", type=Path, help="also write each run's calls, requests and states as JSON here")
    parser.add_argument("--targets", help="also the fan-out over ACCOUNTSxREGIONS targets, e.g. 100x3")
    parser.add_argument("--push", action="store_true", help="also push mode's latency and idle cost")
    parser.add_argument("--push-only", action="store_true",
                        help="only push mode; with --write, replaces that section of the report in place")
    parser.add_argument("--binaries-only", action="store_true",
                        help="only each function's cold start and zip (to compare build profiles); prints, writes nothing")
    args = parser.parse_args()
    if args.binaries_only:
        _, cold, zips = run([], args.release, args.cold_starts, log=lambda m: print(m, file=sys.stderr))
        print("\n".join(render_binaries(cold, zips)))
        return 0
    if args.push_only:
        section = "\n".join(render_push(bench_push(args.release, log=lambda m: print(m, file=sys.stderr)),
                                        function_memory_mb()))
        print(section)
        if args.write:
            args.write.write_text(replace_section(args.write.read_text(), "## Push mode", section))
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    results, cold, zips = run(sizes, args.release, args.cold_starts, log=lambda m: print(m, file=sys.stderr))
    command = "make bench" if args.release and sizes == list(SIZES) and args.targets == "100x3" and args.push else " ".join(["python tests/stack/benchmarks.py",
                                                                                  *sys.argv[1:]])
    report = render(results, cold, zips, args.release, command)
    if args.targets:
        accounts, regions = (int(n) for n in args.targets.lower().split("x"))
        if regions > len(TARGET_REGIONS):
            raise SystemExit(f"--targets: at most {len(TARGET_REGIONS)} regions")
        targets = bench_targets(args.release, accounts, TARGET_REGIONS[:regions], log=lambda m: print(m, file=sys.stderr))
        report += "\n" + "\n".join(render_targets(targets, function_memory_mb()))
    if args.push:
        report += "\n" + "\n".join(render_push(bench_push(args.release, log=lambda m: print(m, file=sys.stderr)),
                                               function_memory_mb()))
    print(report)
    if args.raw:
        args.raw.write_text(json.dumps(raw_figures(results), indent=1))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
