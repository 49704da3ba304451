"""Pages of the apigatewayv2 listings, which moto answers whole whatever `maxResults` says.

Test support only, not product code. API Gateway v2 pages `GetApis`, `GetStages`, `GetDomainNames` and
`GetApiMappings`: a request carries `maxResults` (a number sent as a string) and the previous page's `nextToken`; an
answer holds at most `maxResults` `items` and a `nextToken` while more remain. The AWS proxy sends moto's whole answer
through `V2Paging.page`, so the agent's paging is exercised as AWS would exercise it; `page_size` caps the page below
`maxResults`, so a handful of APIs spans several pages. The token is opaque to clients: it encodes the listing it
belongs to and the offset, and a token that is not one of ours, or belongs to another listing, is a 400
`BadRequestException`, as AWS answers an invalid token.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Callable
from urllib.parse import parse_qs

LISTING = re.compile(r"/v2/(apis|apis/[^/]+/stages|domainnames|domainnames/[^/]+/apimappings)/?")

# (status, JSON body) of an error answered instead of moto's, or a function moto's JSON answer goes through.
Answer = tuple[int, dict]
Rewrite = Callable[[dict], dict]


class V2Paging:
    def __init__(self) -> None:
        # None: pages hold `maxResults` items (all of them without it); a number caps every page at that many.
        self.page_size: int | None = None

    def page(self, method: str, path: str, query: str) -> Answer | Rewrite | None:
        """A rewrite cutting the listing at `path` to the requested page; an error answer; None for other requests."""
        if method != "GET" or not LISTING.fullmatch(path):
            return None
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        limit = params.get("maxResults")
        if limit is not None and not (limit.isdigit() and int(limit) > 0):
            return 400, {"message": f"Invalid maxResults: {limit!r}"}
        offset = 0
        if "nextToken" in params:
            offset = _offset(params["nextToken"], path)
            if offset is None:
                return 400, {"message": "Invalid nextToken"}
        size = min(int(limit) if limit else 1 << 31, self.page_size or 1 << 31)

        def cut(answer: dict) -> dict:
            items = answer.get("items") or []
            rest = {name: value for name, value in answer.items() if name not in ("items", "nextToken")}
            end = offset + size
            if end < len(items):
                rest["nextToken"] = _token(path, end)
            return {**rest, "items": items[offset:end]}

        return cut


def _token(path: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"listing": path, "offset": offset}).encode()).decode()


def _offset(token: str, path: str) -> int | None:
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get("listing") != path or not isinstance(fields.get("offset"), int):
        return None
    return fields["offset"]
