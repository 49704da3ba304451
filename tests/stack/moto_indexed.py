"""moto's server with an index in front of CloudWatch `GetMetricData`, `ListMetrics` as CloudWatch lists, and
EventBridge's targets sent the whole event.

`GetMetricData`: moto answers in time proportional to queries x periods x every datapoint stored: hours for one read
of the largest region (13,200 metrics).

Test support only, not product code, and not a stand-in: every answer is still computed by moto's own
`get_metric_data`, query by query, over the datapoints that query can match (same metric name and the same
dimensions, plus any datapoint with a dimension without value, which moto treats as a wildcard). Queries that
are not plain `MetricStat` queries (math and Metrics Insights expressions, which read other queries' results or all
data), and queries with a dimension without value, go to moto unchanged with every datapoint.
test_fakes.py checks that both give the same answers on random data.

`ListMetrics`: moto lists every metric it ever received, at once. CloudWatch does not: "after you create a metric,
allow up to fifteen minutes for the metric to appear" in ListMetrics, and metrics that have not had any new data
points in the past two weeks are not listed (the ListMetrics reference); `RecentlyActive=PT3H` lists only metrics with
data points in the past three hours. So here a metric is listed only when it has a data point between two weeks (or,
with `RecentlyActive`, three hours) ago and `MOTO_LIST_METRICS_DELAY_SECONDS` (default 900, AWS's fifteen minutes)
ago: a metric whose first data point is newer is not listed yet, nor one whose traffic starts again after two weeks.
The datapoints' own timestamps stand for when their requests were made.

EventBridge's targets: a target without an input transformer receives the whole matched event, as EventBridge sends it
(`version`, `id`, `detail-type`, `source`, `account`, `time`, `region`, `resources`, `detail`). moto builds that body
by string substitution into a template that leaves `account` out (and would rewrite any `<id>`, `<time>`... inside the
detail); here the event itself is sent, so an SQS target's message body is the event a consumer on AWS reads (push.py).
An input transformer is still moto's.

Run as `python moto_indexed.py -H 127.0.0.1 -p PORT`, the arguments of `moto_server`.
"""

from __future__ import annotations

import calendar
import copy
import os
import sys
import threading
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from moto.cloudwatch.models import CloudWatchBackend
from moto.cloudwatch.responses import CloudWatchResponse
from moto.events.utils import EventTemplateParser

_moto_get_metric_data = CloudWatchBackend.get_metric_data
_moto_get_filtered_metrics = CloudWatchBackend.get_filtered_metrics
_moto_list_metrics_response = CloudWatchResponse.list_metrics
_moto_event_template_parse = EventTemplateParser.parse
# The fields of an event as EventBridge delivers it to a target, in its order.
EVENT_FIELDS = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")

LISTING_DELAY_SECONDS = float(os.environ.get("MOTO_LIST_METRICS_DELAY_SECONDS", "900"))
LISTED_FOR_SECONDS = 14 * 86400
RECENTLY_ACTIVE_SECONDS = 3 * 3600
# The RecentlyActive parameter of the ListMetrics request being answered (moto serves each request in a thread).
_request = threading.local()


def _key(metric_name: str, dimensions: list[tuple[Any, Any]]) -> tuple:
    return metric_name, tuple(sorted(dimensions, key=repr))


def indexed_get_metric_data(self: CloudWatchBackend, queries: list[dict[str, Any]], start_time, end_time,
                            scan_by: str = "TimestampAscending") -> list[dict[str, Any]]:
    def plain(query: dict) -> bool:
        dimensions = query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", [])
        return "MetricStat" in query and all(d.get("Value") is not None for d in dimensions)

    if not queries or not all(plain(q) for q in queries) or start_time >= end_time:
        return _moto_get_metric_data(self, queries, start_time, end_time, scan_by)
    exact: dict[tuple, list] = defaultdict(list)
    wildcard: dict[str, list] = defaultdict(list)  # datapoints with a dimension without value, by metric name
    by_name: dict[str, list] = defaultdict(list)
    for datum in self.get_all_metrics():
        by_name[datum.name].append(datum)
        if any(d.value is None for d in datum.dimensions):
            wildcard[datum.name].append(datum)
        else:
            exact[_key(datum.name, [(d.name, d.value) for d in datum.dimensions])].append(datum)
    results = []
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        name, dimensions = metric["MetricName"], metric.get("Dimensions", [])
        if dimensions:
            candidates = exact[_key(name, [(d["Name"], d["Value"]) for d in dimensions])] + wildcard[name]
        else:
            candidates = by_name[name]
        view = SimpleNamespace(get_all_metrics=lambda candidates=candidates: candidates)
        results += _moto_get_metric_data(view, [query], start_time, end_time, scan_by)  # type: ignore[arg-type]
    return results


def listed_metrics(self: CloudWatchBackend, metric_name: str, namespace: str,
                   dimensions: list[dict[str, str]]) -> list:
    """moto's filtered metrics, less those CloudWatch would not list now (module docstring)."""
    metrics = _moto_get_filtered_metrics(self, metric_name, namespace, dimensions)
    now = time.time()
    since = now - (RECENTLY_ACTIVE_SECONDS if getattr(_request, "recently_active", None) else LISTED_FOR_SECONDS)
    until = now - LISTING_DELAY_SECONDS
    listable = set()
    for datum in self.get_all_metrics():
        stamp = calendar.timegm(datum.timestamp.utctimetuple()) if datum.timestamp else now
        if since <= stamp <= until:
            listable.add(_metric_of(datum))
    # moto returns a metric once per data point (its duplicate check never matches); CloudWatch lists it once, and pages
    # 500 metrics, not data points.
    listed = {}
    for metric in metrics:
        if _metric_of(metric) in listable:
            listed.setdefault(_metric_of(metric), metric)
    return list(listed.values())


def _metric_of(datum) -> tuple:
    return datum.namespace, datum.name, tuple(sorted((d.name, d.value) for d in datum.dimensions))


def list_metrics_response(self: CloudWatchResponse):
    _request.recently_active = self._get_param("RecentlyActive")
    try:
        return _moto_list_metrics_response(self)
    finally:
        _request.recently_active = None


def target_input(input_template: str | None, input_paths_map: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """What a rule's target receives: the matched event itself without an input transformer (module docstring), else
    moto's rendering of the transformer."""
    if input_template is None and not input_paths_map:
        return {field: copy.deepcopy(event[field]) for field in EVENT_FIELDS if field in event}
    return _moto_event_template_parse(input_template, input_paths_map, event)


def install() -> None:
    CloudWatchBackend.get_metric_data = indexed_get_metric_data  # type: ignore[method-assign]
    CloudWatchBackend.get_filtered_metrics = listed_metrics  # type: ignore[method-assign]
    CloudWatchResponse.list_metrics = list_metrics_response  # type: ignore[method-assign]
    EventTemplateParser.parse = staticmethod(target_input)  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    install()
    sys.exit(main())
