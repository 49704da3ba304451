"""The embedded local stack: one execution of the real state machine on this machine.

Test support and the README's local run, not product code. It wires:

    aws-local-stepfunctions (statemachine/agent.asl.json, unmodified but for the ARNs)
      -> lambda_adapter (Lambda Invoke API semantics, the deployed timeouts)
        -> cargo lambda watch (the five Rust binaries)
          -> aws_proxy (API Gateway's management quota, call counts, faults)
            -> moto server (API Gateway, CloudWatch, DynamoDB, STS, Secrets Manager)
          -> fake CloudTrail, fake APICP
    fake CloudTrail -> moto's EventBridge -> SQS -> the event source mapping (push.py, once `enable_push()`)

Whatever the environment already configures is used instead of the embedded part: real AWS when
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID` or `AWS_PROFILE` is set, a real control plane when
`APICP_URL` is set. Run one execution:

    python tests/stack/stack.py run [--input '{"mode":"full"}']
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accounts import Accounts  # noqa: E402
from aws_proxy import AwsProxy  # noqa: E402
from fake_apicp import FakeControlPlane  # noqa: E402
from fake_cloudtrail import FakeCloudTrail  # noqa: E402
from lambda_adapter import LambdaAdapter, load_timeouts  # noqa: E402
from push import EventBridgeDelivery, MotoClients, PushPipeline  # noqa: E402

REPO = HERE.parents[1]
STACK_DIR = HERE
DEFINITION = REPO / "statemachine" / "agent.asl.json"
# The fan-out over account-regions: one execution of DEFINITION per target.
FAN_OUT_DEFINITION = REPO / "statemachine" / "targets.asl.json"
NODE = HERE / "node_modules" / ".bin" / "node"
RUNNER = HERE / "run-execution.mjs"
REGION = "us-east-1"
# The account moto answers for credentials it did not issue: the deployment's own.
HOME_ACCOUNT = "123456789012"
STATE_TABLE = "apicp-agent-state"
APICP_USER, APICP_PASSWORD = "agent", "local-secret"
# A secret's name is accepted wherever its ARN is; moto gives a re-created secret a new ARN.
CONTROL_PLANE_SECRET = "apicp-agent/control-plane"
# The state machine's name as the CDK deploys it (`<stackName>-workflow`): executions are registered under it.
STATE_MACHINE_NAME = "ApiGatewayApicpAgent-workflow"
FAN_OUT_MACHINE_NAME = "ApiGatewayApicpAgent-targets"
# Where stacks record their functions' AWS calls when they stop, for tests/iam (when the suite sets it).
IAM_USES_DIR = REPO / "target" / "iam-uses"
# The same for the stacks of a fan-out deployment (tests/e2e/test_targets.py), checked against its own template.
IAM_TARGETS_USES_DIR = REPO / "target" / "iam-uses-targets"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ExecutionReport:
    status: str
    output: dict | list | None
    error: str | None
    cause: str | None
    states: list[dict]
    printed: str
    # The largest state input and output (bytes, state) and the history events counted by the runner.
    limits: dict = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def count(self, name: str, status: str) -> int:
        return sum(1 for s in self.states if s["name"] == name and s["status"] == status)


@dataclass
class TickResult:
    """A tick's answer (`targets`, `idle`, `handedOver`, `handedOverCount`, `execution`) and the execution it
    started, run to its end (None when every target was idle)."""

    report: dict
    execution: ExecutionReport | None


@dataclass
class EmbeddedStack:
    """Starts what the environment does not provide; `stop()` ends all of it."""

    function_env: dict[str, str] = field(default_factory=dict)
    # The functions' build: debug (fast to build, what the tests run) or release (what the benchmarks time).
    release: bool = False
    # cargo's own progress while the functions build (`make run`); the tests build quietly.
    build_progress: bool = False
    # Whether stop() records the functions' calls for tests/iam (which checks them against the default template's
    # grants: a stack federating other accounts makes calls only a multi-target deployment grants).
    record_iam_uses: bool = True
    iam_uses_dir: Path = IAM_USES_DIR
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agent-stack-")))
    moto_url: str | None = None
    aws_proxy: AwsProxy | None = None  # in front of moto for the functions: AWS's quotas, counts, faults
    apicp: FakeControlPlane | None = None
    cloudtrail: FakeCloudTrail | None = None
    # How long CloudTrail takes to hand an API Gateway call to EventBridge: each event's delay is drawn uniformly from
    # this (min, max) range in seconds, read per event (AWS publishes no latency; minutes are not unusual).
    push_delay: tuple[float, float] = (15, 60)
    # CloudTrail's hand-over to EventBridge (the fake CloudTrail's `on_event`): every delivery, pending or done.
    deliveries: EventBridgeDelivery | None = None
    # The push path from EventBridge to the executions, once `enable_push()` set it up.
    push: PushPipeline | None = None
    _moto_clients: MotoClients | None = None
    _processes: list[subprocess.Popen] = field(default_factory=list)
    _adapter: LambdaAdapter | None = None
    _functions: subprocess.Popen | None = None  # cargo lambda watch
    _restarting: threading.Lock = field(default_factory=threading.Lock)

    def start(self, overrides: dict[str, str] | None = None) -> "EmbeddedStack":
        env = {"AWS_REGION": os.environ.get("AWS_REGION", REGION), "AWS_LAMBDA_LOG_LEVEL": "info"}
        if not any(os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")):
            self.moto_url = self._start_moto()
            self.aws_proxy = AwsProxy(self.moto_url).start()
            # Each account-region has its own events: the proxy knows which account a key acts in.
            self.cloudtrail = FakeCloudTrail(rate_per_second=2, region=env["AWS_REGION"],
                                             account_of=self.aws_proxy.accounts.account_of,
                                             region_disabled=self.aws_proxy.accounts.region_disabled).start()
            self._moto_clients = MotoClients(lambda service, account, region: boto(service, self.moto_url, account,
                                                                                   region, own_session=True))
            # Events reach EventBridge only where a trail logs them (FakeCloudTrail.add_trail), as on AWS.
            self.deliveries = EventBridgeDelivery(self._moto_clients, lambda: self.push_delay)
            self.cloudtrail.on_event = self.deliveries
            env.update({
                "AWS_ENDPOINT_URL": self.aws_proxy.url,
                "AWS_ENDPOINT_URL_CLOUDTRAIL": self.cloudtrail.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "STATE_TABLE": STATE_TABLE,
            })
            create_state_table(self.moto_url)
        if not os.environ.get("APICP_URL"):
            self.apicp = FakeControlPlane(username=APICP_USER, password=APICP_PASSWORD).start()
            env["APICP_URL"] = self.apicp.url
            if self.moto_url:
                # As deployed: the functions read the credentials from Secrets Manager.
                put_control_plane_secret(self.moto_url, APICP_USER, APICP_PASSWORD)
                env["APICP_SECRET_ARN"] = CONTROL_PLANE_SECRET
            else:
                env.update({"APICP_USERNAME": APICP_USER, "APICP_PASSWORD": APICP_PASSWORD})
        env.update(overrides or {})
        if self.moto_url:
            # What the tick hands targets over to (as the CDK sets them on the tick's function).
            env["SYNC_STATE_MACHINE_ARN"] = ensure_state_machine(self.moto_url, STATE_MACHINE_NAME)
            if env.get("TARGET_ACCOUNTS", "self") != "self" or env.get("TARGET_REGIONS"):
                env["FAN_OUT_STATE_MACHINE_ARN"] = ensure_state_machine(self.moto_url, FAN_OUT_MACHINE_NAME)
        self.function_env = env
        self._start_functions()
        return self

    def _start_moto(self) -> str:
        port = free_port()
        # moto_server of this interpreter's environment (the venv), with GetMetricData indexed (moto_indexed.py).
        moto = [sys.executable, str(Path(__file__).with_name("moto_indexed.py"))]
        self._spawn([*moto, "-H", "127.0.0.1", "-p", str(port)], "moto.log", os.environ.copy())
        wait_until(lambda: port_open(port), "moto server", 60)
        return f"http://127.0.0.1:{port}"

    def _start_functions(self) -> None:
        # Build first: `cargo lambda watch` would otherwise compile on the first invocation,
        # inside the state's timeout.
        build = ["cargo", "build", "--workspace", "--bins", *self._profile()]
        if not self.build_progress:
            build.append("--quiet")
        elif not all(self.binary(function).exists() for function in load_timeouts()):
            print("building the five functions and the settings checker for this host; the first build compiles the "
                  "AWS SDK: about 6 minutes on 2 cores, seconds afterwards", flush=True)
        subprocess.run(build, cwd=REPO, check=True)
        self._adapter = LambdaAdapter(self._watch(), on_timeout=self._cut_off).start()

    def _profile(self) -> list[str]:
        return ["--release"] if self.release else []

    def binary(self, function: str) -> Path:
        """The host build of a function's binary that this stack runs."""
        return REPO / "target" / ("release" if self.release else "debug") / function

    def function_processes(self) -> dict[int, str]:
        """The running function instances: pid -> the function's binary name."""
        binaries = set(load_timeouts())
        found = {}
        for pid in _instances_of(self._adapter.watch_url):
            with contextlib.suppress(OSError):
                name = Path(os.readlink(f"/proc/{pid}/exe")).name
                if name in binaries:
                    found[pid] = name
        return found

    def enable_push(self, visibility_timeout: int = 30, batch_window: float = 5, batch_size: int = 100,
                    pollers: int = 1, account: str = HOME_ACCOUNT, region: str | None = None,
                    function_timeout: float | None = None) -> PushPipeline:
        """The push path in the deployment's account-region (`account`, `region`: the functions' by default): the
        queue, its dead-letter queue and the rule (push.py), and the event source mapping invoking `targets` with the
        SQS batches, whose push executions are run here as Step Functions would run them. Events reach the queue only
        from an account-region with a trail (`cloudtrail.add_trail`), `push_delay` after the call.

        `function_timeout`, the starter's timeout as deployed, makes the mapping refuse a shorter visibility timeout,
        as AWS does. It is not the adapter's timeout for `targets` (the tick's, from functions.json): the starter is
        a function of its own on AWS. A batch held longer than the visibility timeout is noted in `push.errors()`."""
        if not self.moto_url:
            raise RuntimeError("the push path needs the embedded AWS")
        if self.push:
            self.push.stop()
        machines = {STATE_MACHINE_NAME: False, FAN_OUT_MACHINE_NAME: True}
        self.push = PushPipeline(self._moto_clients, self._adapter.url,
                                 lambda execution_input, arn, fan_out: self.run(execution_input, execution_arn=arn,
                                                                                fan_out=fan_out),
                                 machines, function="targets", visibility_timeout=visibility_timeout,
                                 batch_window=batch_window, batch_size=batch_size, pollers=pollers,
                                 function_timeout=function_timeout)
        self.push.setup(account, region or self.function_env["AWS_REGION"]).start()
        return self.push

    def reset_account(self) -> None:
        """A clean account on the embedded AWS and control plane: nothing deployed, an empty state table, the
        control plane secret, no calls counted, no event on its way to EventBridge; the push path (when enabled) set up
        again with empty queues and no records."""
        self.deliveries.reset()
        if self.push:
            self.push.pause()  # the batch in hand and the executions running end before moto's state goes
        urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")).close()
        # moto's reset forgets the credentials it issued: so do the proxy and the tests' own.
        _ACCOUNT_CREDENTIALS.clear()
        self.aws_proxy.accounts.forget()
        self._moto_clients.forget()
        if self.push:
            self.push.reset()
        create_state_table(self.moto_url)
        put_control_plane_secret(self.moto_url, APICP_USER, APICP_PASSWORD)
        self.apicp.reset()
        self.cloudtrail.reset()
        self.aws_proxy.reset()
        self.aws_proxy.v2_deployments.reset()  # AWS state, wiped with moto's
        self.aws_proxy.listing_pages.page_size = None

    def set_function_timeout(self, function: str, seconds: float | None) -> None:
        """Gives `function` (a binary's name) another timeout than the deployed one; None restores that."""
        deployed = load_timeouts()
        self._adapter.timeouts[function] = deployed[function] if seconds is None else seconds

    def _watch(self) -> str:
        """Starts `cargo lambda watch`; returns its URL."""
        port = free_port()
        env = {**os.environ, **self.function_env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        self._functions = self._spawn(["cargo", "lambda", "watch", "-A", "127.0.0.1", "-P", str(port),
                                       "--ignore-changes", "--concurrency", "4", *self._profile()], "functions.log", env)
        wait_until(lambda: port_open(port), "cargo lambda watch", 120)
        return f"http://127.0.0.1:{port}"

    def _cut_off(self, watch_url: str) -> str:
        """A function outlived its timeout: stops every function instance (the emulator cannot stop
        one, and would not start another for a killed one) and starts the emulator again, so that
        the timed-out function does no more work, as on Lambda, and the next invocation starts cold."""
        with self._restarting:
            if self._adapter and self._adapter.watch_url != watch_url.rstrip("/"):
                return self._adapter.watch_url  # another timeout restarted it already
            self._processes.remove(self._functions)
            _stop(self._functions, graceful=False)
            # The instances' `cargo run` children, should any outlive the emulator.
            for pid in _instances_of(watch_url):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return self._watch()

    def _spawn(self, command: list[str], log_name: str, env: dict) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")
        self._processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
        return self._processes[-1]

    def tick(self, scheduled_time: str | None = None, echo: bool = False) -> TickResult:
        """One tick of the schedule, as EventBridge Scheduler invokes it on AWS: the tick function (the `targets`
        binary, action `tick`) serves idle targets in-process and starts one execution in Step Functions (moto)
        for the others; that execution is then run here, under the ARN the tick started, as Step Functions
        would run it."""
        for variable, name in (("SYNC_STATE_MACHINE_ARN", STATE_MACHINE_NAME),
                               ("FAN_OUT_STATE_MACHINE_ARN", FAN_OUT_MACHINE_NAME)):
            if variable in self.function_env:  # again after a reset of moto: the same ARN
                assert ensure_state_machine(self.moto_url, name) == self.function_env[variable]
        payload = json.dumps({"action": "tick", "scheduledTime": scheduled_time}).encode()
        request = urllib.request.Request(f"{self._adapter.url}/2015-03-31/functions/targets/invocations",
                                         data=payload, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.loads(response.read())
            if response.headers.get("X-Amz-Function-Error"):
                raise RuntimeError(f"the tick failed: {answer}")
        arn = answer.get("execution")
        if not arn:
            return TickResult(answer, None)
        described = boto("stepfunctions", self.moto_url).describe_execution(executionArn=arn)
        fan_out = described["stateMachineArn"].endswith(f":{FAN_OUT_MACHINE_NAME}")
        execution = self.run(json.loads(described["input"]), echo=echo, fan_out=fan_out, execution_arn=arn)
        return TickResult(answer, execution)

    def run(self, execution_input: dict | None = None, echo: bool = False, history: bool = False,
            fan_out: bool = False, child_definition: Path = DEFINITION,
            execution_arn: str | None = None) -> ExecutionReport:
        """Runs one execution; with `history`, every history event and its payloads are kept beside the
        stack's logs (`history-*.jsonl`). On the embedded AWS, Step Functions (moto) holds the execution
        as running until it ends, as a claim's `DescribeExecution` expects; safe to call from several
        threads at once (overlapping executions). With `fan_out`, the execution is the fan-out's
        (statemachine/targets.asl.json), each target's run an execution of its own (run-execution.mjs) of
        `child_definition` (the workflow, or a stand-in for a test of the fan-out alone). `execution_arn` runs an
        execution already started in Step Functions (moto), as the tick starts one."""
        stamp = time.time_ns()
        report_path = self.log_dir / f"execution-{stamp}.json"
        history_args = ["--history", str(self.log_dir / f"history-{stamp}.jsonl")] if history else []
        machine = FAN_OUT_MACHINE_NAME if fan_out else STATE_MACHINE_NAME
        if self.moto_url and not execution_arn:
            execution_arn = start_recorded_execution(self.moto_url, f"local-{stamp}", machine)
        arn_args = ["--execution-arn", execution_arn] if execution_arn else []
        definition = DEFINITION
        if fan_out:
            definition = FAN_OUT_DEFINITION
            arn_args += ["--child", f"SyncStateMachineArn={child_definition}", "--child-machine-name",
                         STATE_MACHINE_NAME]
            if self.moto_url:
                ensure_state_machine(self.moto_url, STATE_MACHINE_NAME)  # where the runs are registered
                arn_args += ["--sfn-endpoint", self.moto_url]
        env = {**os.environ, "AWS_ENDPOINT_URL_LAMBDA": self._adapter.url,
               "AWS_REGION": self.function_env["AWS_REGION"]}
        try:
            completed = subprocess.run(
                [str(NODE), str(RUNNER), "--definition", str(definition), "--input", json.dumps(execution_input or {}),
                 "--report", str(report_path), *history_args, *arn_args],
                cwd=REPO, env=env, capture_output=not echo, text=True)
        finally:
            if execution_arn:
                boto("stepfunctions", self.moto_url).stop_execution(executionArn=execution_arn)
        report = json.loads(report_path.read_text())
        return ExecutionReport(status=report["status"], output=report.get("output"), error=report.get("error"),
                               cause=report.get("cause"), states=report["states"],
                               printed=completed.stdout or "", limits=report.get("limits", {}))

    def record_uses(self, directory: Path) -> None:
        """Writes each kind of AWS call the functions made (iam_check.Use, one JSON line each) to a file of its own in
        `directory`, for the check of the calls against the template's grants."""
        if not self.aws_proxy:
            return
        uses = set(self.aws_proxy.uses()) | self.cloudtrail.uses()
        directory.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(dataclasses.asdict(use)) for use in sorted(uses)]
        (directory / f"{os.getpid()}-{id(self)}.jsonl").write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        if os.environ.get("AGENT_RECORD_IAM_USES") and self.record_iam_uses:
            self.record_uses(self.iam_uses_dir)
        # The push path first: its threads call the functions and moto.
        if self.deliveries:
            self.deliveries.stop()
        if self.push:
            self.push.stop()
        if self._adapter:
            self._adapter.stop()
        for process in self._processes:
            _stop(process)
        for fake in (self.apicp, self.cloudtrail, self.aws_proxy):
            if fake:
                fake.stop()


def _stop(process: subprocess.Popen, graceful: bool = True) -> None:
    """Ends the process and its process group: asked first when `graceful`, else killed at once."""
    try:
        os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _instances_of(watch_url: str) -> list[int]:
    """The processes the emulator at `watch_url` started (`cargo run` and the function binaries): their Runtime
    API is its."""
    return _processes_with_env(f"AWS_LAMBDA_RUNTIME_API={watch_url.rstrip('/')}/")


def _processes_with_env(prefix: str) -> list[int]:
    """The processes with an environment entry (`NAME=value`) that starts with `prefix`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(e.startswith(prefix.encode()) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                found.append(int(pid))
    return found


def boto(service: str, endpoint: str, account: str | None = None, region: str | None = None, own_session: bool = False):
    """A client of the embedded AWS at `endpoint`, in the home account and region unless told another: another
    account's calls are made with credentials moto issues for it (so `endpoint` must then be moto's own URL: the AWS
    proxy checks every AssumeRole as STS does). With `own_session`, the client comes from a boto3 session of its own
    rather than boto3's default one, which is not safe to make clients from in two threads at once (the push path's
    threads make theirs while a test makes its own)."""
    import boto3
    from botocore.config import Config

    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    if account and account != HOME_ACCOUNT:
        credentials = account_credentials(endpoint, account)
    # moto cannot read gzip-compressed PutMetricData bodies.
    maker = boto3.session.Session() if own_session else boto3
    return maker.client(service, endpoint_url=endpoint, region_name=region or REGION, **credentials,
                        config=Config(disable_request_compression=True))


_ACCOUNT_CREDENTIALS: dict[tuple[str, str], dict[str, str]] = {}


def account_credentials(moto_url: str, account: str) -> dict[str, str]:
    """Credentials acting in `account` on the moto server at `moto_url` (an admin's, as a test sets an account up)."""
    if (moto_url, account) not in _ACCOUNT_CREDENTIALS:
        issued = Accounts(moto_url).admin_session(account, REGION).get_credentials()
        _ACCOUNT_CREDENTIALS[moto_url, account] = {"aws_access_key_id": issued.access_key,
                                                   "aws_secret_access_key": issued.secret_key,
                                                   "aws_session_token": issued.token}
    return _ACCOUNT_CREDENTIALS[moto_url, account]


# The metrics windows the agent runs with by default (METRICS_INTERVAL_SECONDS, METRICS_BUFFER_SECONDS), as here.
METRICS_INTERVAL = 300
METRICS_BUFFER = 180


def latest_window_end(now: float) -> int:
    """The end (epoch seconds) of the latest metrics window due at `now`."""
    return int((now - METRICS_BUFFER) // METRICS_INTERVAL * METRICS_INTERVAL)


def due_window_end(now: float, assets_watermark: int) -> int:
    """The end of the latest metrics window a run reads at `now` for a stage whose assets watermark is
    `assets_watermark`: the window also ends before it, up to which the stage's API catalog is complete."""
    return int(min(now - METRICS_BUFFER, assets_watermark) // METRICS_INTERVAL * METRICS_INTERVAL)


class StateTable:
    """The agent's state table on the embedded AWS, read and set as a test or benchmark needs."""

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
        self.put_number(stage, "metricsWatermark", position)

    def put_number(self, stage: str, attribute: str, value: int) -> None:
        self._dynamodb.update_item(TableName=STATE_TABLE, Key={"stage": {"S": stage}},
                                   UpdateExpression="SET #a = :v", ExpressionAttributeNames={"#a": attribute},
                                   ExpressionAttributeValues={":v": {"N": str(value)}})

    def remove(self, stage: str, attribute: str) -> None:
        self._dynamodb.update_item(TableName=STATE_TABLE, Key={"stage": {"S": stage}}, UpdateExpression="REMOVE #a",
                                   ExpressionAttributeNames={"#a": attribute})


def start_recorded_execution(endpoint: str, name: str, machine_name: str = STATE_MACHINE_NAME) -> str:
    """An execution of the agent's state machine (`machine_name`) that Step Functions (moto) reports as running until
    it is stopped; returns its ARN. (moto runs no definition: the interpreter runs the real one.)"""
    machine = ensure_state_machine(endpoint, machine_name)
    return boto("stepfunctions", endpoint).start_execution(stateMachineArn=machine, name=name)["executionArn"]


def ensure_state_machine(endpoint: str, machine_name: str) -> str:
    """The ARN of the state machine `machine_name` in Step Functions (moto), created if new."""
    sfn = boto("stepfunctions", endpoint)
    machines = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    machine = machines.get(machine_name)
    if not machine:
        with contextlib.suppress(sfn.exceptions.StateMachineAlreadyExists):  # another thread created it
            sfn.create_state_machine(name=machine_name, roleArn="arn:aws:iam::123456789012:role/agent",
                                     definition=json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass",
                                                                                                    "End": True}}}))
        machine = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
                       if m["name"] == machine_name)
    return machine


def put_control_plane_secret(endpoint: str, username: str, password: str) -> None:
    """Creates the control plane secret, or puts a new value into it (a rotation)."""
    secrets = boto("secretsmanager", endpoint)
    value = json.dumps({"username": username, "password": password})
    try:
        secrets.put_secret_value(SecretId=CONTROL_PLANE_SECRET, SecretString=value)
    except secrets.exceptions.ResourceNotFoundException:
        secrets.create_secret(Name=CONTROL_PLANE_SECRET, SecretString=value)


def create_state_table(endpoint: str) -> None:
    dynamodb = boto("dynamodb", endpoint)
    dynamodb.create_table(TableName=STATE_TABLE, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "stage", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "stage", "KeyType": "HASH"}])


# `make run-org`: the home account and two members in two regions. The first member's role admits the agent; the
# second has none, so its targets fail (TargetUnreachable) while the others are synced.
DEMO_MEMBERS = ("111111111111", "222222222222")
DEMO_EXTERNAL_ID = "local-demo"
DEMO_TARGET_SETTINGS = {
    "TARGET_ACCOUNTS": ",".join((HOME_ACCOUNT, *DEMO_MEMBERS)),
    "TARGET_REGIONS": "us-east-1,eu-west-1",
    "TARGET_ROLE_EXTERNAL_ID": DEMO_EXTERNAL_ID,
}


def seed_demo_targets(stack: EmbeddedStack) -> None:
    """The demo APIs in every target but the home us-east-1 (seeded already), and the first member's role."""
    import seed

    for account in (HOME_ACCOUNT, *DEMO_MEMBERS):
        for region in DEMO_TARGET_SETTINGS["TARGET_REGIONS"].split(","):
            if (account, region) != (HOME_ACCOUNT, REGION):
                seed.demo(stack.moto_url, account=account, region=region)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HOME_ACCOUNT}:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": DEMO_EXTERNAL_ID}}}]}
    boto("iam", stack.moto_url, DEMO_MEMBERS[0]).create_role(RoleName="ApicpAgentReader",
                                                            AssumeRolePolicyDocument=json.dumps(trust))


# `make run PUSH=1`: CloudTrail's record reaches EventBridge this long after the call (AWS publishes no figure; the
# benchmark assumes 15-60 s).
DEMO_PUSH_DELAY = (5.0, 10.0)


def demonstrate_push(stack: EmbeddedStack, api) -> None:
    """Changes `api`'s description as a user would, and follows the change through the push path to the control
    plane."""
    description = f"changed at {time.strftime('%H:%M:%S')}"
    patch = [{"op": "replace", "path": "/description", "value": description}]
    boto("apigateway", stack.moto_url).update_rest_api(restApiId=api.id, patchOperations=patch)
    made = time.time()
    stack.cloudtrail.add_event("UpdateRestApi", eventTime=made, requestParameters={"restApiId": api.id,
                                                                                   "patchOperations": patch})
    print(f"\n=== push: {api.name}'s description changed in API Gateway; CloudTrail hands the call to EventBridge "
          f"{DEMO_PUSH_DELAY[0]:g}-{DEMO_PUSH_DELAY[1]:g} s later, the queue's batch starts an execution", flush=True)
    stack.push.wait_for(lambda p: any(e.ended for e in p.executions()), timeout=120, what="the push execution")
    execution = stack.push.executions()[0]
    held = [a for apis in stack.apicp.state()["apis"].values() for a in apis.values() if a.get("description") == description]
    print(f"push execution {execution.name}: {execution.status}; the control plane held the change "
          f"{execution.ended - made:.1f} s after the call ({len(held)} runtime(s)), without waiting for CloudTrail's "
          f"5-minute window")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run executions of the state machine, one after another")
    run.add_argument("--input", default="{}", help='execution input, e.g. \'{"mode":"full"}\'')
    run.add_argument("--runs", type=int, default=1,
                     help="executions to run, as the schedule would (a stage's metrics wait for its first sync)")
    run.add_argument("--build-progress", action="store_true",
                     help="show cargo's progress while the functions build (the first build takes minutes)")
    run.add_argument("--targets", action="store_true",
                     help="many accounts and regions: the fan-out over DEMO_TARGETS, one account of which has no role")
    run.add_argument("--tick", action="store_true",
                     help="as the schedule runs it: each run is a tick, which starts an execution only for work")
    run.add_argument("--push", action="store_true",
                     help="push mode: after the runs, a change made in API Gateway reaches the control plane through "
                          "EventBridge, the queue and a push execution, without waiting for CloudTrail's window")
    args = parser.parse_args()

    stack = EmbeddedStack(build_progress=args.build_progress)
    try:
        print("starting the local stack: moto and the fakes, then the functions' build and cargo lambda watch", flush=True)
        if args.push:
            stack.push_delay = DEMO_PUSH_DELAY
        stack.start({**(DEMO_TARGET_SETTINGS if args.targets else {}), **({"PUSH_MODE": "true"} if args.push else {})})
        if args.targets and not stack.moto_url:
            raise SystemExit("--targets needs the embedded AWS: unset AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE")
        if stack.moto_url:
            import seed

            demo_apis = seed.demo(stack.moto_url)
            if args.push:
                stack.cloudtrail.add_trail("management-events")
                stack.enable_push()
            if args.targets:
                seed_demo_targets(stack)
            print(f"embedded stack: moto {stack.moto_url}, seeded with demo APIs (logs in {stack.log_dir})")
        if stack.apicp:
            print(f"embedded control plane fake at {stack.apicp.url}")
        report = None
        for number in range(1, args.runs + 1):
            if args.runs > 1:
                print(f"\n=== {'tick' if args.tick else 'execution'} {number} of {args.runs}")
                time.sleep(1.5)  # watermarks are whole seconds: each run gets a CloudTrail window of its own
            if args.tick:
                ticked = stack.tick(echo=True)
                print(f"tick: {json.dumps(ticked.report)}")
                if ticked.execution is None:
                    continue
                report = ticked.execution
            else:
                report = stack.run(json.loads(args.input), echo=True, fan_out=args.targets)
            if not report.succeeded:
                break
            if waiting := [i["stage"] for i in (report.output or {}).get("inactive", [])
                           if i.get("reason") == "notSyncedYet"]:
                print(f"note: the heartbeats of {', '.join(waiting)} said inactive (notSyncedYet): a runtime is active once "
                      "its stage's APIs are synced, which this execution has just done; the next one reports it active")
        if args.push and report is not None and report.succeeded:
            demonstrate_push(stack, next(iter(demo_apis.values())))
        if stack.apicp:
            state = stack.apicp.state()
            print("\ncontrol plane now holds:")
            for runtime_id, apis in state["apis"].items():
                print(f"  runtime {runtime_id}: " + ", ".join(f"{a['name']} ({a.get('version')})" for a in apis.values()))
            print(f"  heartbeats: {len(state['heartbeats'])}, metrics reports: {len(state['metrics'])}")
        return 0 if report is None or report.succeeded else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
