"""A strict stand-in for the deployments of HTTP and WebSocket APIs (apigatewayv2), which moto lacks.

Test support only, not product code. moto implements v2 APIs, stages, routes, tags, domain names and API mappings,
but not `CreateDeployment`, `GetDeployments` or `DeleteDeployment`, and its stages never carry a `deploymentId`. The
AWS proxy (aws_proxy.py) hands v2 requests to this class first; it answers the deployment operations itself and
adds `deploymentId` to moto's stage answers, following the API Gateway v2 API reference:

- `CreateDeployment` (`POST /v2/apis/{apiId}/deployments`, optional `stageName`): 404 `NotFoundException` for an
  unknown API or stage; with a stage, the stage serves the new deployment. Answers 201 with the deployment.
- `GetDeployments` (`GET /v2/apis/{apiId}/deployments`): `{"items": [...]}`.
- `DeleteDeployment`: 400 `BadRequestException` while a stage serves it, else 204.
- `CreateStage` with `deploymentId` (must exist) serves it; with `autoDeploy: true` API Gateway deploys the stage at
  once and again after every change to the API's routes or integrations (a new deployment each time).
- `DeleteStage` and `DeleteApi` forget what the stage or API served.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import unquote

API_PATH = re.compile(r"/v2/apis/([^/]+)(/.*)?")

# (status, JSON body) of an answer this class gives instead of moto, or a function moto's JSON answer goes through.
Answer = tuple[int, dict | None]
Rewrite = Callable[[dict], dict]


@dataclass
class _Api:
    deployments: dict[str, dict] = field(default_factory=dict)
    # stage name -> deployment id it serves
    serving: dict[str, str] = field(default_factory=dict)
    auto_deploy: set[str] = field(default_factory=set)


class V2Deployments:
    """What the stand-in remembers, per API id. `exists(path)` asks moto whether a v2 resource exists."""

    def __init__(self, exists: Callable[[str, dict], bool]):
        self._exists = exists
        self._lock = threading.Lock()
        self._apis: dict[str, _Api] = {}

    def reset(self) -> None:
        with self._lock:
            self._apis.clear()

    def intercept(self, method: str, path: str, body: bytes, headers: dict) -> Answer | Rewrite | None:
        """An answer for a deployment operation; a rewrite of moto's answer for stages; None to forward unchanged."""
        match = API_PATH.fullmatch(path)
        if not match:
            return None
        api_id, rest = match.group(1), match.group(2) or ""
        parts = [unquote(p) for p in rest.split("/") if p]
        request = json.loads(body) if body else {}
        if parts[:1] == ["deployments"]:
            return self._deployments(method, api_id, parts[1:], request, headers)
        if parts[:1] == ["stages"]:
            return self._stages(method, api_id, parts[1:], request, headers)
        if method == "DELETE" and not parts:
            with self._lock:
                self._apis.pop(api_id, None)
            return None
        if method in ("POST", "PATCH", "DELETE") and parts[:1] in (["routes"], ["integrations"]):
            with self._lock:
                api = self._apis.get(api_id)
                for stage in sorted(api.auto_deploy) if api else []:
                    self._deploy(api, stage, "automatic deployment")
        return None

    def _deployments(self, method: str, api_id: str, parts: list[str], request: dict, headers: dict) -> Answer:
        if not self._exists(f"/v2/apis/{api_id}", headers):
            return 404, {"message": f"Invalid API identifier specified {api_id}"}
        with self._lock:
            api = self._apis.setdefault(api_id, _Api())
            if method == "POST" and not parts:
                stage = request.get("stageName")
                if stage and not self._exists(f"/v2/apis/{api_id}/stages/{stage}", headers):
                    return 404, {"message": f"Invalid stage identifier specified {stage}"}
                return 201, self._deploy(api, stage, request.get("description"))
            if method == "GET" and not parts:
                return 200, {"items": list(api.deployments.values())}
            if method == "DELETE" and len(parts) == 1:
                if parts[0] not in api.deployments:
                    return 404, {"message": f"Invalid deployment identifier specified {parts[0]}"}
                if parts[0] in api.serving.values():
                    return 400, {"message": "Active stages pointing to this deployment must be moved or deleted"}
                del api.deployments[parts[0]]
                return 204, None
        return 404, {"message": "unsupported deployment operation"}

    def _stages(self, method: str, api_id: str, parts: list[str], request: dict, headers: dict) -> Answer | Rewrite | None:
        with self._lock:
            api = self._apis.setdefault(api_id, _Api())
            if method == "POST" and not parts:
                stage = request.get("stageName", "")
                deployment = request.get("deploymentId")
                if deployment and deployment not in api.deployments:
                    return 404, {"message": f"Invalid deployment identifier specified {deployment}"}
                if deployment:
                    api.serving[stage] = deployment
                if request.get("autoDeploy"):
                    api.auto_deploy.add(stage)
                    self._deploy(api, stage, "automatic deployment")
                return self._with_deployment(api)
            if method == "DELETE" and len(parts) == 1:
                api.serving.pop(parts[0], None)
                api.auto_deploy.discard(parts[0])
                return None
            if method == "GET":
                return self._with_deployment(api)
        return None

    def _deploy(self, api: _Api, stage: str | None, description: str | None) -> dict:
        deployment_id = uuid.uuid4().hex[:6]
        deployment = {
            "deploymentId": deployment_id,
            "deploymentStatus": "DEPLOYED",
            "autoDeployed": description == "automatic deployment",
            "createdDate": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if description:
            deployment["description"] = description
        api.deployments[deployment_id] = deployment
        if stage:
            api.serving[stage] = deployment_id
        return deployment

    def _with_deployment(self, api: _Api) -> Rewrite:
        """Adds `deploymentId` to moto's stage (or to each item of its stage listing)."""
        def rewrite(answer: dict) -> dict:
            with self._lock:
                for stage in answer.get("items", [answer]):
                    if deployment := api.serving.get(stage.get("stageName")):
                        stage["deploymentId"] = deployment
            return answer
        return rewrite


def moto_exists(host: str, port: int, timeout: float) -> Callable[[str, dict], bool]:
    """`exists(path, headers)` for a moto server: a GET with the request's own (SigV4) headers answers 200."""
    def exists(path: str, headers: dict) -> bool:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path, headers={k: v for k, v in headers.items()
                                                     if k.lower() in ("authorization", "x-amz-date", "host")})
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()
    return exists
