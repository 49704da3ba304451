"""Pages of the API Gateway listings, which moto answers whole whatever the request asks.

Test support only, not product code. Both management APIs page their listings, as their API references describe:

- REST (v1) `GetRestApis`, `GetDomainNames`, `GetBasePathMappings`: `limit` (default 25, at most 500) and the previous
  page's `position`; the answer holds `item` and a `position` while more remain.
- HTTP and WebSocket (v2) `GetApis`, `GetStages`, `GetDomainNames`, `GetApiMappings`: `maxResults` (a number sent as
  a string) and the previous page's `nextToken`; the answer holds `items` and a `nextToken` while more remain.

The AWS proxy sends moto's whole answer through `ListingPages.page`, so the agent's paging is exercised as AWS would
exercise it; `page_size` caps every page below what the request asks, so a handful of resources spans several
pages. Tokens are opaque to clients: each encodes its listing and offset, and a token that is not one of ours, or
belongs to another listing, is a 400 `BadRequestException`, as is a page size outside the allowed range.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs

# (status, JSON body) of an error answered instead of moto's, or a function moto's JSON answer goes through.
Answer = tuple[int, dict]
Rewrite = Callable[[dict], dict]


@dataclass(frozen=True)
class _Style:
    path: re.Pattern
    items: str
    token: str
    limit: str
    default_limit: int | None  # None: every item
    max_limit: int | None


_STYLES = (
    _Style(re.compile(r"/restapis|/domainnames|/domainnames/[^/]+/basepathmappings"), "item", "position", "limit", 25,
           500),
    _Style(re.compile(r"/v2/(apis|apis/[^/]+/stages|domainnames|domainnames/[^/]+/apimappings)"), "items",
           "nextToken", "maxResults", None, None),
)


class ListingPages:
    def __init__(self) -> None:
        # None: pages as the request asks; a number caps every page at that many items.
        self.page_size: int | None = None

    def page(self, method: str, path: str, query: str) -> Answer | Rewrite | None:
        """A rewrite cutting the listing at `path` to the requested page; an error answer; None for other requests."""
        path = path.rstrip("/")
        style = next((s for s in _STYLES if s.path.fullmatch(path)), None)
        if method != "GET" or style is None:
            return None
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        asked = params.get(style.limit)
        if asked is not None and not (asked.isdigit() and 0 < int(asked) <= (style.max_limit or 1 << 31)):
            return 400, {"message": f"Invalid {style.limit}: {asked!r}"}
        offset = 0
        if style.token in params:
            offset = _offset(params[style.token], path)
            if offset is None:
                return 400, {"message": f"Invalid {style.token}"}
        size = int(asked) if asked else style.default_limit or 1 << 31
        size = min(size, self.page_size or size)

        def cut(answer: dict) -> dict:
            items = answer.get(style.items) or []
            rest = {name: value for name, value in answer.items() if name not in (style.items, style.token)}
            end = offset + size
            if end < len(items):
                rest[style.token] = _token(path, end)
            return {**rest, style.items: items[offset:end]}

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
