"""Each function's AWS calls, as the local stack saw them, against the IAM grants of the synthesized template.

Test support, not product code. moto enforces no IAM, so a call no grant allows would pass every local test and fail
on AWS, and a grant no call needs would widen a role for nothing. The AWS proxy and the CloudTrail fake record every
call with the function that made it (`app/<binary>` in the SDK's user agent); this module turns each call into the IAM
action and resource AWS authorizes it as (with the DynamoDB item's partition key, which `dynamodb:LeadingKeys`
conditions read) and checks it against the statements of the function's role in the template that `cdk synth` wrote.
"""

from __future__ import annotations

import fnmatch
import json
import re
from urllib.parse import parse_qs
from dataclasses import dataclass
from pathlib import Path

# The local stack's account, region and names, standing for the template's tokens.
ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/apicp-agent-state"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:apicp-agent/control-plane"
# The role of each function in the template, by the start of its logical id.
ROLES = {"ensure-runtime": "EnsureRuntimeRole", "list-changes": "ListChangesRole", "transform": "TransformRole",
         "publish": "PublishRole", "ack-watermark": "AckWatermarkRole", "tick": "TickRole"}
# Granted for the Lambda service itself (logs, X-Ray traces), not for calls the functions make.
RUNTIME_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# Calls that need no permission.
UNAUTHORIZED_CALLS = {("sts", "GetCallerIdentity")}
# What the calls a function makes in a target account, with its member role's credentials, are checked against.
MEMBER_ROLE = "member-role"


@dataclass(frozen=True, order=True)
class Use:
    """One kind of call a function made: the IAM action, the resource it acts on, and (DynamoDB) the item's key."""

    function: str
    action: str
    resource: str
    key: str | None = None


def use_of(function: str, service: str, operation: str, method: str, path: str, body: bytes) -> Use | None:
    """The IAM authorization an AWS SDK call needs; None for calls that need none."""
    if (service, operation) in UNAUTHORIZED_CALLS or not function:
        return None
    fields = _json(body)
    if (service, operation) == ("sts", "AssumeRole"):
        # A query-protocol (form) body: the role is the resource.
        return Use(function, "sts:AssumeRole", (parse_qs(body.decode(errors="replace")).get("RoleArn") or ["*"])[0])
    if service == "apigateway":
        # API Gateway authorizes by HTTP method and resource path; the v2 API's paths are /apis/..., served at /v2/apis.
        return Use(function, f"apigateway:{method}", f"arn:aws:apigateway:{REGION}::{path.removeprefix('/v2')}")
    if service == "dynamodb":
        table = fields.get("TableName", "")
        key = (fields.get("Key") or fields.get("Item") or {}).get("stage", {}).get("S")
        return Use(function, f"dynamodb:{operation}", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}", key)
    if service == "secretsmanager":
        return Use(function, f"secretsmanager:{operation}", SECRET_ARN)
    if service == "states":
        # DescribeExecution acts on the execution, StartExecution on the state machine.
        return Use(function, f"states:{operation}", fields.get("executionArn") or fields.get("stateMachineArn", "*"))
    if service == "monitoring":
        return Use(function, f"cloudwatch:{operation}", "*")
    if service == "cloudtrail":
        return Use(function, f"cloudtrail:{operation}", "*")
    return Use(function, f"{service}:{operation}", "*")


def _json(body: bytes) -> dict:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass
class Statement:
    actions: list[str]
    resources: list[str]
    # dynamodb:LeadingKeys patterns the item's key must match (ForAllValues:StringLike), or None.
    leading_keys: list[str] | None
    # dynamodb:LeadingKeys patterns the item's key must not match (ForAllValues:StringNotLike), or None.
    not_leading_keys: list[str] | None

    def allows(self, use: Use) -> bool:
        if not any(fnmatch.fnmatchcase(use.action, action) for action in self.actions):
            return False
        if not any(_matches(resource, use.resource) for resource in self.resources):
            return False
        if self.leading_keys is not None and (use.key is None or not _like_any(use.key, self.leading_keys)):
            return False
        if self.not_leading_keys is not None and (use.key is None or _like_any(use.key, self.not_leading_keys)):
            return False
        return True


def _like_any(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def _matches(pattern: str, resource: str) -> bool:
    # IAM wildcards: * any run of characters (also /), ? one character.
    return pattern == "*" or re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), resource) is not None


def grants(template: dict, state_machine_name: str) -> dict[str, list[Statement]]:
    """Each function's statements in `template`, with its tokens (partition, region, account, the table, the
    secret, the state machines' names and ARNs) resolved to the local stack's values."""
    resources = template["Resources"]
    tokens = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
              "AWS::StackName": state_machine_name.removesuffix("-workflow")}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::DynamoDB::Table":
            tokens[logical_id] = TABLE_ARN
        if resource["Type"] == "AWS::SecretsManager::Secret":
            tokens[logical_id] = SECRET_ARN
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            # A state machine's Ref is its ARN, named as the template names it (`<stack name>-workflow`...).
            name = _resolve(resource["Properties"].get("StateMachineName", logical_id), tokens)
            tokens[logical_id] = f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
    by_function: dict[str, list[Statement]] = {function: [] for function in ROLES}
    for resource in resources.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        roles = json.dumps(resource["Properties"]["Roles"])
        function = next((f for f, role in ROLES.items() if f'"{role}' in roles), None)
        if function is None:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Effect") != "Allow":
                continue
            condition = statement.get("Condition", {})
            by_function[function].append(Statement(
                actions=_list(statement["Action"]),
                resources=[_resolve(r, tokens) for r in _list(statement["Resource"])],
                leading_keys=_list_or_none(condition.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")),
                not_leading_keys=_list_or_none(
                    condition.get("ForAllValues:StringNotLike", {}).get("dynamodb:LeadingKeys")),
            ))
    return by_function


def member_grants(template: dict) -> dict[str, list[Statement]]:
    """The member role's statements in its template (`<stackName>-MemberRole`), under MEMBER_ROLE."""
    statements = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if statement.get("Effect") == "Allow":
                    statements.append(Statement(actions=_list(statement["Action"]),
                                                resources=[_resolve(r, {"AWS::Partition": PARTITION})
                                                           for r in _list(statement["Resource"])],
                                                leading_keys=None, not_leading_keys=None))
    return {MEMBER_ROLE: statements}


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _list_or_none(value) -> list[str] | None:
    return None if value is None else [str(v) for v in _list(value)]


def _resolve(value, tokens: dict[str, str]) -> str:
    """A resource of the template as a string: Fn::Join, Fn::GetAtt (an ARN) and Ref resolved."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_resolve(part, tokens) for part in parts)
    if "Ref" in value:
        return tokens.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: tokens.get(m[1], f"<{m[1]}>"), value["Fn::Sub"])
    if "Fn::GetAtt" in value:
        return tokens.get(value["Fn::GetAtt"][0], f"<{value['Fn::GetAtt'][0]}>")
    return json.dumps(value)


def check(uses: set[Use], by_function: dict[str, list[Statement]]) -> tuple[list[Use], list[tuple[str, ...]]]:
    """The calls no statement allows, and the grants no call used: each action of a statement on each of its resources
    and, under a `dynamodb:LeadingKeys` condition, each item pattern it names must be used by some call."""
    missing = sorted(use for use in uses if not any(s.allows(use) for s in by_function.get(use.function, [])))
    unused = set()
    for function, statements in by_function.items():
        calls = [use for use in uses if use.function == function]
        for statement in statements:
            for action in statement.actions:
                if action in RUNTIME_ACTIONS:
                    continue
                for resource in statement.resources:
                    granted = [use for use in calls
                               if fnmatch.fnmatchcase(use.action, action) and _matches(resource, use.resource)
                               and statement.allows(use)]
                    for keys in [[key] for key in statement.leading_keys or []] or [None]:
                        if not any(keys is None or _like_any(use.key or "", keys) for use in granted):
                            unused.add((function, action, resource, *(keys or [])))
    return missing, sorted(unused)


def load_uses(directory: Path) -> set[Use]:
    """The uses every stack of a test session recorded (`*.jsonl` files, one use per line)."""
    uses = set()
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                uses.add(Use(**json.loads(line)))
    return uses
