"""Which AWS account each request acts in, and whether a role may be assumed: STS's and IAM's part of the local stack.

Test support only, not product code. moto keeps every account's resources apart and lands a request made with an
assumed role's credentials in the role's account, but its `sts:AssumeRole` issues credentials for any role ARN,
existing or not, whoever asks. AWS refuses (AccessDenied) unless the role exists in its account and its trust policy
admits the caller, with the external id its condition names. The AWS proxy asks `Accounts.refusal` before it
forwards an AssumeRole, and records the account of every key the answer issues (`record_issued`), so that the API
Gateway quota and the fake CloudTrail can tell the accounts apart as AWS does.

What the trust check reads of a policy: `Allow` statements for `sts:AssumeRole` whose `Principal.AWS` names the
caller's account (its root, the account id, or any ARN in it) and whose `StringEquals` conditions on `sts:ExternalId`
hold. Other condition keys (`aws:PrincipalArn`, `aws:PrincipalOrgID`) are not evaluated here: locally the functions
act as moto's default user, not as their roles.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from xml.etree import ElementTree

import boto3
from botocore.config import Config

ROLE_ARN = re.compile(r"arn:aws[\w-]*:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]+)$")
STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class Accounts:
    def __init__(self, moto_url: str, home: str = "123456789012"):
        self.home = home
        self._moto_url = moto_url
        self._lock = threading.Lock()
        self._issued: dict[str, str] = {}  # access key id -> account
        self._disabled: set[tuple[str, str]] = set()  # (account, region): an opt-in region not enabled
        self._admins: dict[tuple[str, str], boto3.Session] = {}  # (account, region) -> admin session

    def forget(self) -> None:
        """After moto's reset: the keys it issued, and the admins', are gone with its state."""
        with self._lock:
            self._issued.clear()
            self._admins.clear()

    def set_region_enabled(self, account: str, region: str, enabled: bool) -> None:
        """An opt-in region `account` has (not) enabled: AWS answers every call signed for it there with
        `UnrecognizedClientException` (see `region_disabled`)."""
        with self._lock:
            (self._disabled.discard if enabled else self._disabled.add)((account, region))

    def region_disabled(self, account: str, region: str) -> bool:
        with self._lock:
            return (account, region) in self._disabled

    def account_of(self, access_key: str) -> str:
        """The account a request signed with `access_key` acts in: an assumed role's, else the home account."""
        with self._lock:
            return self._issued.get(access_key, self.home)

    def is_assumed(self, access_key: str) -> bool:
        with self._lock:
            return access_key in self._issued

    def record_issued(self, answer: bytes) -> None:
        """Notes the account of the credentials an AssumeRole answer (awsQuery XML) issues."""
        try:
            root = ElementTree.fromstring(answer)
        except ElementTree.ParseError:
            return
        key = root.find(f".//{STS_NS}Credentials/{STS_NS}AccessKeyId")
        arn = root.find(f".//{STS_NS}AssumedRoleUser/{STS_NS}Arn")
        if key is not None and arn is not None and (match := re.search(r"::(\d{12}):", arn.text or "")):
            with self._lock:
                self._issued[key.text] = match.group(1)

    def refusal(self, caller_key: str, body: bytes) -> str | None:
        """Why STS refuses this AssumeRole (its AccessDenied message), or None when the role admits the caller."""
        fields = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        role_arn, external_id = fields.get("RoleArn", ""), fields.get("ExternalId")
        caller = self.account_of(caller_key)
        denied = (f"User: arn:aws:iam::{caller}:user/moto is not authorized to perform: sts:AssumeRole on resource: "
                  f"{role_arn}")
        match = ROLE_ARN.match(role_arn)
        if not match:
            return denied
        account, name = match.groups()
        policy = self._trust_policy(account, name)
        if policy is None:
            return denied
        for statement in _listed(policy.get("Statement")):
            if statement.get("Effect") != "Allow" or "sts:AssumeRole" not in _listed(statement.get("Action")):
                continue
            principals = [str(p) for p in _listed((statement.get("Principal") or {}).get("AWS"))]
            if not any(p == caller or f":{caller}:" in p for p in principals):
                continue
            required = ((statement.get("Condition") or {}).get("StringEquals") or {}).get("sts:ExternalId")
            if required is not None and external_id not in _listed(required):
                continue
            return None
        return denied

    def admin_session(self, account: str, region: str) -> boto3.Session:
        """Credentials that act in `account` (moto's own AssumeRole, unchecked): how tests set up an account. Kept:
        moto's credentials do not expire."""
        with self._lock:
            if (account, region) in self._admins:
                return self._admins[account, region]
        sts = boto3.client("sts", region_name=region, endpoint_url=self._moto_url, aws_access_key_id="local",
                           aws_secret_access_key="local")
        issued = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/local-stack-admin",
                                 RoleSessionName="local-stack")["Credentials"]
        session = boto3.Session(aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                                aws_session_token=issued["SessionToken"], region_name=region)
        with self._lock:
            return self._admins.setdefault((account, region), session)

    def _trust_policy(self, account: str, role_name: str) -> dict | None:
        session = self.admin_session(account, "us-east-1")
        iam = session.client("iam", endpoint_url=self._moto_url, config=Config(retries={"max_attempts": 1}))
        try:
            document = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        except iam.exceptions.NoSuchEntityException:
            return None
        return json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else document


def _listed(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
