"""Prometheus metrics of the router service (serving/metrics.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving_fixtures import route


def test_metrics_count_requests_uncertainty_latency_and_the_log(client: TestClient) -> None:
    for text in ("what is my balance", "set an alarm for 9", "blorp zzzt qq"):
        route(client, text)
    client.post("/route", content=b"{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert 'intelrouter_route_requests_total{label="balance",variant="production"} 1.0' in text
    assert 'intelrouter_route_latency_seconds_count{variant="production"} 3.0' in text
    assert 'intelrouter_http_rejected_total{status="400"} 1.0' in text
    for name in ("intelrouter_log_queue_depth", "intelrouter_log_rows_spilled_total",
                 "intelrouter_log_rows_dropped_total", "intelrouter_uncertain_ratio",
                 "intelrouter_registry_poll_failures_total", "intelrouter_canary_share"):
        assert f"\n{name} " in text, name
    assert 'intelrouter_model_version{alias="production",version="1"} 1.0' in text


def test_latency_histogram_uses_prometheus_le_buckets() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from serving.metrics import LATENCY_BUCKETS, RouterMetrics

    metrics = RouterMetrics(lambda: {"queue_depth": 0, "written": 0, "spilled": 0, "dropped": 0, "write_failures": 0,
                                     "poll_failures": 0, "loads": 0, "load_failures": 0, "canary_share": 0.0,
                                     "versions": {}})
    seconds = [0.0004, LATENCY_BUCKETS[0], 0.003, 0.003, 0.02, 99.0]  # one exactly on a bound, one above them all
    for i, s in enumerate(seconds):
        metrics.observe("production", "a" if i % 2 else "b", i == 5, s)
    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for fam in text_string_to_metric_families(metrics.render().decode()) for m in fam.samples}
    for bound in LATENCY_BUCKETS:
        key = ("intelrouter_route_latency_seconds_bucket", (("le", str(bound)), ("variant", "production")))
        assert samples[key] == sum(s <= bound for s in seconds), bound
    assert samples[("intelrouter_route_latency_seconds_bucket", (("le", "+Inf"), ("variant", "production")))] == 6
    total = samples[("intelrouter_route_latency_seconds_sum", (("variant", "production"),))]
    assert total == pytest.approx(sum(seconds))
    assert samples[("intelrouter_route_requests_total", (("label", "a"), ("variant", "production")))] == 3
    assert samples[("intelrouter_route_uncertain_total", (("variant", "production"),))] == 1
