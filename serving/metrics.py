"""Prometheus metrics of one app: routed requests, uncertainty, latency, the log writer and the registry."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _StateCollector:
    """Reads the log writer's and the model holder's counters at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        """The families of the current state."""
        s = self.read()
        yield GaugeMetricFamily("intelrouter_log_queue_depth", "Query rows waiting to be written.",
                                value=s["queue_depth"])
        yield GaugeMetricFamily("intelrouter_log_journal_backlog", "Query rows journaled and not in the database yet.",
                                value=s.get("journal_backlog", 0))
        for name, doc in (
            ("written", "Query rows written to the database."),
            ("spilled", "Query rows past the memory bound, waiting in the journal alone (database down)."),
            ("rejected", "Query rows the database refused for good, kept in the journal's rejected file."),
            ("dropped", "Query rows lost: neither journaled nor buffered (the journal unusable)."),
            ("write_failures", "Failed write attempts of the query log (retried)."),
        ):
            yield CounterMetricFamily(f"intelrouter_log_rows_{name}" if name != "write_failures"
                                      else "intelrouter_log_write_failures", doc, value=s.get(name, 0))
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
    """The app's own registry, so several apps (tests) never collide on metric names.

    Routed requests are counted in plain ints and dicts, turned into Prometheus families at scrape time:
    `observe` runs once per request on the event loop (as does the /metrics endpoint, so no lock is needed),
    and prometheus_client's locked per-sample counters cost several times more than the counting itself.
    """

    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.rejected = Counter("intelrouter_http_rejected", "Requests answered with an error, by status.",
                                ["status"], registry=self.registry)
        self.total = 0
        self.total_uncertain = 0
        self.routed: dict[tuple[str, str], int] = {}  # (variant, label) -> requests
        self.uncertain: dict[str, int] = {}  # variant -> requests answered UNCERTAIN
        self.latency: dict[str, list[float]] = {}  # variant -> per-bucket counts (last: above every bound), then sum
        self._read_state = read_state
        self.registry.register(_StateCollector(self._state))
        self.registry.register(self)  # collect() below

    def _state(self) -> dict[str, Any]:
        return {**self._read_state(), "requests": self.total, "uncertain": self.total_uncertain}

    def observe(self, variant: str, label: str, uncertain: bool, seconds: float) -> None:
        """Count one routed request."""
        self.total += 1
        key = (variant, label)
        self.routed[key] = self.routed.get(key, 0) + 1
        if uncertain:
            self.total_uncertain += 1
            self.uncertain[variant] = self.uncertain.get(variant, 0) + 1
        hist = self.latency.get(variant)
        if hist is None:
            hist = self.latency[variant] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        """The routed-request families (requests, uncertain, latency) from the plain counters."""
        requests = CounterMetricFamily("intelrouter_route_requests", "Routed requests by variant and label.",
                                       labels=["variant", "label"])
        for (variant, label), n in self.routed.items():
            requests.add_metric([variant, label], n)
        yield requests
        uncertain = CounterMetricFamily("intelrouter_route_uncertain", "Requests answered UNCERTAIN, by variant.",
                                        labels=["variant"])
        for variant, n in self.uncertain.items():
            uncertain.add_metric([variant], n)
        yield uncertain
        latency = HistogramMetricFamily("intelrouter_route_latency_seconds", "Time to route one request.",
                                        labels=["variant"])
        for variant, hist in self.latency.items():
            cumulative = list(accumulate(hist[:-1]))
            buckets = [(floatToGoString(b), c) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=False)]
            latency.add_metric([variant], buckets + [("+Inf", cumulative[-1])], sum_value=hist[-1])
        yield latency

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
