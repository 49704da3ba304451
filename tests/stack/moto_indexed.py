"""moto's server with an index in front of CloudWatch `GetMetricData`, which moto answers in time proportional to
queries x periods x every datapoint stored: hours for one read of the largest region (13,200 metrics).

Test support only, not product code, and not a stand-in: every answer is still computed by moto's own
`get_metric_data`, query by query, over the datapoints that query can match (same metric name and the same
dimensions, plus any datapoint with a dimension without value, which moto treats as a wildcard). Queries that
are not plain `MetricStat` queries (math and Metrics Insights expressions, which read other queries' results or all
data), and queries with a dimension without value, go to moto unchanged with every datapoint.
test_fakes.py checks that both give the same answers on random data.

Run as `python moto_indexed.py -H 127.0.0.1 -p PORT`, the arguments of `moto_server`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from moto.cloudwatch.models import CloudWatchBackend

_moto_get_metric_data = CloudWatchBackend.get_metric_data


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


def install() -> None:
    CloudWatchBackend.get_metric_data = indexed_get_metric_data  # type: ignore[method-assign]


if __name__ == "__main__":
    from moto.server import main

    install()
    sys.exit(main())
