"""What the bridge does, counted for GET /metrics (bridge.metrics_http) with prometheus_client.

Each application has a registry of its own (never the library's global one). Counters and
histograms are fed where things happen: the request middleware, each turn (through its
TurnObserver) and the store's writes; gauges (open sockets, cached bytes, background runs,
turns in flight) are read when the metrics are asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bridge.errors import ApiError
from bridge.wire.events import ResponseObject

PREFIX = "responses_bridge"
# Seconds: from a fast local model's first byte to a thinking model's minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TURN_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# A response still in progress when its turn ended: the client went away.
DISCONNECTED = "disconnected"

Tap = Callable[[bytes], None]
Gauges = Callable[[], Iterator[Metric]]


class _ReadOnScrape(Collector):
    """Gauges computed when the metrics are asked for, from the application's state."""

    def __init__(self, read: Gauges) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        return self._read()


class Metrics:
    """The bridge's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route, method and status (499: the client left)",
            ["route", "method", "status"],
            registry=registry,
        )
        self.turns = Counter(
            f"{PREFIX}_turns",
            "Turns (responses) ended, by model, provider, transport and outcome",
            ["model", "provider", "transport", "outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens",
            "Tokens the providers reported, by kind: input, output, cached (of input), "
            "reasoning (of output)",
            ["model", "provider", "kind"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors",
            "Upstream attempts that ended in an error, by the provider's HTTP status (none: "
            "no HTTP answer, or an error inside the stream), code, and whether it was retried",
            ["provider", "status", "code", "retried"],
            registry=registry,
        )
        self.first_byte = Histogram(
            f"{PREFIX}_time_to_first_byte_seconds",
            "From the start of a turn to the provider's first byte",
            ["model", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.turn_seconds = Histogram(
            f"{PREFIX}_turn_duration_seconds",
            "From the start of a turn to its final event",
            ["model", "provider", "transport"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.store_writes = Histogram(
            f"{PREFIX}_store_write_seconds",
            "How long writing a turn to the store took",
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self.store_failures = Counter(
            f"{PREFIX}_store_write_failures",
            "Turns the store could not write (their response says store: false)",
            registry=registry,
        )
        self.background_started = Counter(
            f"{PREFIX}_background_runs_started",
            "Background responses started",
            registry=registry,
        )

        # Each metric's series by their label values: prometheus_client checks the values
        # and takes a lock to find one (a few microseconds), a dict lookup here.
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}

    def series(self, metric: Counter | Histogram, *values: str) -> Any:
        """The child of `metric` with these label values."""
        key = (id(metric), values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = metric.labels(*values)
        return found

    def read_on_scrape(self, gauges: Gauges) -> None:
        """Register gauges read from the application's state at each scrape."""
        self.registry.register(_ReadOnScrape(gauges))

    def observe(self, model: str, provider: str, transport: str) -> TurnObserver:
        return TurnObserver(self, model, provider, transport)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class TurnObserver:
    """One turn's measurements, fed by the turn engine."""

    def __init__(self, metrics: Metrics, model: str, provider: str, transport: str) -> None:
        self._metrics = metrics
        self._model = model
        self._provider = provider
        self._transport = transport
        self._started = time.monotonic()
        self._first_byte = False

    def tap(self, inner: Tap | None) -> Tap:
        """A tap on the upstream's bytes that notes the first one, then passes them on."""

        def seen(data: bytes) -> None:
            if not self._first_byte:
                self._first_byte = True
                metrics = self._metrics
                metrics.series(metrics.first_byte, self._model, self._provider).observe(
                    time.monotonic() - self._started
                )
            if inner is not None:
                inner(data)

        return seen

    def upstream_error(self, error: ApiError, *, retried: bool) -> None:
        status = str(error.upstream_status) if error.upstream_status else "none"
        self._metrics.upstream_errors.labels(
            self._provider, status, error.code or "none", "true" if retried else "false"
        ).inc()

    def stored(self, seconds: float, ok: bool) -> None:
        self._metrics.store_writes.observe(seconds)
        if not ok:
            self._metrics.store_failures.inc()

    def ended(self, response: ResponseObject) -> None:
        metrics = self._metrics
        outcome = DISCONNECTED if response.status == "in_progress" else response.status
        labels = (self._model, self._provider)
        metrics.series(metrics.turns, *labels, self._transport, outcome).inc()
        metrics.series(metrics.turn_seconds, *labels, self._transport).observe(
            time.monotonic() - self._started
        )
        usage = response.usage
        if usage is None:
            return
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.input_tokens_details.cached_tokens),
            ("reasoning", usage.output_tokens_details.reasoning_tokens),
        ):
            if count:
                metrics.series(metrics.tokens, *labels, kind).inc(count)
