"""moto_indexed.py answers GetMetricData exactly as moto does, only faster: both run on the same random data; it lists
metrics as CloudWatch does; and EventBridge's targets receive the whole event."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from moto.cloudwatch.models import CloudWatchBackend, MetricDatum

from moto_indexed import LISTING_DELAY_SECONDS, indexed_get_metric_data, listed_metrics, target_input

NAMESPACE = "AWS/ApiGateway"
START = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)


def backend_with_random_data(seed: int) -> tuple[CloudWatchBackend, random.Random]:
    rng = random.Random(seed)
    backend = CloudWatchBackend(region_name="us-east-1", account_id="123456789012")
    data = []
    for _ in range(600):
        dimensions = [{"Name": "ApiName" if rng.random() < 0.5 else "ApiId", "Value": f"api{rng.randrange(6)}"},
                      {"Name": "Stage", "Value": rng.choice(["prod", "dev"])}]
        rng.shuffle(dimensions)
        data.append({"MetricName": rng.choice(["Count", "4XXError", "Latency"]), "Dimensions": dimensions,
                     "Value": float(rng.randrange(100)), "Unit": rng.choice([None, "Count"]),
                     "Timestamp": START + timedelta(seconds=rng.randrange(3600))})
    for start in range(0, len(data), 100):
        backend.put_metric_data(NAMESPACE, [{k: v for k, v in d.items() if v is not None} for d in
                                            data[start:start + 100]])
    # Datapoints moto matches as wildcards (a dimension without value) and without dimensions.
    backend.metric_data.append(MetricDatum(NAMESPACE, "Count", 7.0, [{"Name": "ApiName", "Value": None},
                                                                   {"Name": "Stage", "Value": "prod"}],
                                           START + timedelta(minutes=3)))
    backend.metric_data.append(MetricDatum(NAMESPACE, "Count", 5.0, [], START + timedelta(minutes=4)))
    return backend, rng


def random_query(rng: random.Random, n: int) -> dict:
    dimensions = [] if rng.random() < 0.1 else [
        {"Name": "Stage", "Value": rng.choice(["prod", "dev"])},
        {"Name": rng.choice(["ApiName", "ApiId"]), "Value": f"api{rng.randrange(6)}"}]
    metric = {"Namespace": NAMESPACE, "MetricName": rng.choice(["Count", "4XXError", "Latency"])}
    if dimensions:
        metric["Dimensions"] = dimensions
    stat = {"Metric": metric, "Period": str(rng.choice([60, 300])), "Stat": rng.choice(["Sum", "Average",
                                                                                        "SampleCount"])}
    if rng.random() < 0.2:
        stat["Unit"] = "Count"
    query = {"Id": f"q{n}", "MetricStat": stat}
    if rng.random() < 0.1:
        query["ReturnData"] = False
    return query


@pytest.mark.parametrize("seed", range(8))
def test_the_index_gives_moto_s_own_answers(seed):
    backend, rng = backend_with_random_data(seed)
    queries = [random_query(rng, n) for n in range(40)]
    start = START + timedelta(minutes=rng.randrange(30))
    end = start + timedelta(minutes=rng.randrange(1, 40))
    for scan_by in ("TimestampAscending", "TimestampDescending"):
        expected = CloudWatchBackend.get_metric_data(backend, queries, start, end, scan_by)
        assert indexed_get_metric_data(backend, queries, start, end, scan_by) == expected
    assert any(result["values"] for result in expected), "the data must meet some queries"


def test_expressions_and_bad_windows_go_to_moto_unchanged():
    backend, rng = backend_with_random_data(99)
    queries = [random_query(rng, 0), {"Id": "total", "Expression": "q0 * 2"}]
    end = START + timedelta(minutes=30)
    assert indexed_get_metric_data(backend, queries, START, end) == CloudWatchBackend.get_metric_data(
        backend, queries, START, end)
    with pytest.raises(Exception, match="EndTime must be greater"):
        indexed_get_metric_data(backend, queries[:1], end, START)


def test_a_metric_is_listed_once_whatever_its_data_points_and_only_once_listable():
    backend = CloudWatchBackend(region_name="us-east-1", account_id="123456789012")
    now = datetime.now(timezone.utc)

    def put(api: str, *ages: float) -> None:
        backend.put_metric_data(NAMESPACE, [{
            "MetricName": "Count", "Value": 1.0, "Timestamp": now - timedelta(seconds=age),
            "Dimensions": [{"Name": "ApiName", "Value": api}, {"Name": "Stage", "Value": "prod"}]} for age in ages])

    put("busy", 3600, 3000, 60)  # three data points, listable for an hour
    put("new", 60)  # its first data point a minute old: CloudWatch lists it only after LISTING_DELAY_SECONDS
    put("idle", 20 * 86400)  # nothing for two weeks: no longer listed
    listed = listed_metrics(backend, "Count", NAMESPACE, [{"Name": "Stage", "Value": "prod"}])

    assert LISTING_DELAY_SECONDS == 900
    assert [{d.name: d.value for d in metric.dimensions}["ApiName"] for metric in listed] == ["busy"]


def test_a_target_without_input_transformer_receives_the_whole_event_and_a_transformer_is_still_applied():
    event = {"version": "0", "id": "e1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.apigateway",
             "account": "111111111111", "time": 1_800_000_000, "region": "eu-west-1", "resources": [],
             "detail": {"eventName": "CreateDeployment", "requestParameters": {"description": "<id> at <time>"}},
             "ingestion-time": 1_800_000_001}

    whole = target_input(None, {}, event)
    assert list(whole) == ["version", "id", "detail-type", "source", "account", "time", "region", "resources",
                           "detail"]
    assert whole["account"] == "111111111111" and whole["detail"] == event["detail"]
    assert target_input('{"name": "<name>"}', {"name": "$.detail.eventName"}, event) == {"name": "CreateDeployment"}
