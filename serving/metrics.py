"""Prometheus metrics of one app: routed requests, uncertainty, latency, the log writer and the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _StateCollector:
    """Reads the log writer's and the model holder's counters at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.read()
        yield GaugeMetricFamily("intelrouter_log_queue_depth", "Query rows waiting to be written.",
                                value=s["queue_depth"])
        for name, doc in (
            ("written", "Query rows written to the database."),
            ("spilled", "Query rows spilled to the local file (buffer full or database down at shutdown)."),
            ("dropped", "Query rows lost: rejected by the database or not spillable."),
            ("write_failures", "Failed write attempts of the query log (retried)."),
        ):
            yield CounterMetricFamily(f"intelrouter_log_rows_{name}" if name != "write_failures"
                                      else "intelrouter_log_write_failures", doc, value=s[name])
        yield CounterMetricFamily("intelrouter_registry_poll_failures", "Registry polls that failed.",
                                  value=s["poll_failures"])
        yield CounterMetricFamily("intelrouter_model_loads", "Model versions loaded.", value=s["loads"])
        yield CounterMetricFamily("intelrouter_model_load_failures", "Model versions that failed to load.",
                                  value=s["load_failures"])
        yield GaugeMetricFamily("intelrouter_canary_share", "Share of users routed to @staging.",
                                value=s["canary_share"])
        info = GaugeMetricFamily("intelrouter_model_version", "Loaded version per alias (value 1).",
                                 labels=["alias", "version"])
        for alias, version in s["versions"].items():
            if version is not None:
                info.add_metric([alias, version], 1)
        yield info
        total = s["requests"]
        yield GaugeMetricFamily("intelrouter_uncertain_ratio", "Share of routed requests answered UNCERTAIN.",
                                value=(s["uncertain"] / total) if total else 0.0)


class RouterMetrics:
    """The app's own registry, so several apps (tests) never collide on metric names."""

    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("intelrouter_route_requests", "Routed requests by variant and label.",
                                ["variant", "label"], registry=self.registry)
        self.uncertain = Counter("intelrouter_route_uncertain", "Requests answered UNCERTAIN, by variant.",
                                 ["variant"], registry=self.registry)
        self.latency = Histogram("intelrouter_route_latency_seconds", "Time to route one request.",
                                 ["variant"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("intelrouter_http_rejected", "Requests answered with an error, by status.",
                                ["status"], registry=self.registry)
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.total = 0
        self.total_uncertain = 0
        self._read_state = read_state
        self.registry.register(_StateCollector(self._state))

    def _state(self) -> dict[str, Any]:
        return {**self._read_state(), "requests": self.total, "uncertain": self.total_uncertain}

    def observe(self, variant: str, label: str, uncertain: bool, seconds: float) -> None:
        """Count one routed request."""
        children = self._children.get((variant, label))
        if children is None:  # labels() lookups cost more than the increments: keep the children
            children = self._children[(variant, label)] = (
                self.requests.labels(variant, label), self.latency.labels(variant), self.uncertain.labels(variant))
        self.total += 1
        children[0].inc()
        children[1].observe(seconds)
        if uncertain:
            self.total_uncertain += 1
            children[2].inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
