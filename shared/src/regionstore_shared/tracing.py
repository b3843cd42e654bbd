"""OpenTelemetry traces: one trace per write, from the gateway's request to every region.

Off unless the standard ``OTEL_*`` variables configure an exporter (:class:`TraceSettings`).
When off, no tracer provider is installed, the services hold no :class:`CommandTracer` and make
no span, and a command's trace headers are only forwarded as they came (parked copies and dead
letters keep them).

Kafka carries the context as W3C ``traceparent``/``tracestate`` record headers, set by hand
rather than by an aiokafka instrumentation: the consumers apply a whole poll at once, and the
spans worth having are per command and region (applied, parked, drained), not per record
received.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

Headers: TypeAlias = tuple[tuple[str, bytes], ...]
"""Kafka record headers: (name, value) pairs."""

TRACEPARENT = "traceparent"
TRACE_HEADERS = frozenset({TRACEPARENT, "tracestate"})

#: Links a batch span keeps at most: the SDK's own limit (OTEL_SPAN_LINK_COUNT_LIMIT) is 128.
MAX_LINKS = 128

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: CommandTracer | None = None


class TraceSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether a service traces.

    The SDK and the OTLP exporter read the rest themselves (``OTEL_EXPORTER_OTLP_HEADERS``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES``, ...).
    """

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = False
    traces_exporter: str = ""
    """``otlp``, ``console`` or ``none``, comma-separated; unset means ``otlp`` when an OTLP
    endpoint is set, else ``none`` (the specification says ``otlp``: here tracing is opt-in)."""
    exporter_otlp_endpoint: str = ""
    exporter_otlp_traces_endpoint: str = ""
    exporter_otlp_protocol: str = ""
    exporter_otlp_traces_protocol: str = ""
    service_name: str = ""

    def exporters(self) -> list[str]:
        """The exporters to install; empty when tracing is off."""
        if self.sdk_disabled:
            return []
        names = [name.strip().lower() for name in self.traces_exporter.split(",")]
        names = [name for name in names if name and name != "none"]
        if self.traces_exporter.strip():
            return names
        return ["otlp"] if self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint else []

    @property
    def protocol(self) -> str:
        """The OTLP protocol asked for; only ``http/protobuf`` is installed."""
        return self.exporter_otlp_traces_protocol or self.exporter_otlp_protocol or "http/protobuf"


def _exporter(name: str, settings: TraceSettings) -> SpanExporter:
    if name == "otlp":
        if settings.protocol != "http/protobuf":
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={settings.protocol}: only http/protobuf is installed"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={name}: use otlp, console or none")


def configure_tracing(service: str, settings: TraceSettings | None = None) -> TracerProvider | None:
    """Install the tracer provider the ``OTEL_*`` variables ask for; None when they ask for none.

    Spans are exported in batches (BatchSpanProcessor) off the request path; the provider
    flushes them at exit. Log lines made under a span then carry its ids (:class:`TraceIds`).
    """
    global _tracer
    settings = settings or TraceSettings()
    names = settings.exporters()
    if not names:
        return None
    # Imported only here: a service that does not trace does not load the SDK.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name or service})
    )
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    trace.set_tracer_provider(provider)
    _tracer = CommandTracer(provider.get_tracer("regionstore"))
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIds())
    return provider


def command_tracer() -> CommandTracer | None:
    """The process's tracer once :func:`configure_tracing` installed one; None when off."""
    return _tracer


def tracing_enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


def trace_headers(headers: Iterable[tuple[str, bytes]] | None) -> Headers:
    """The trace headers among a Kafka record's headers."""
    if not headers:
        return ()
    return tuple((name, value) for name, value in headers if name in TRACE_HEADERS)


def trace_id_of(headers: Headers) -> str | None:
    """The trace id of a ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    for name, value in headers:
        if name == TRACEPARENT:
            parts = value.split(b"-")
            if len(parts) == 4 and len(parts[1]) == 32:
                return parts[1].decode("ascii", "replace")
    return None


def current_trace_id() -> str | None:
    """The trace id of the span in progress, if any."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def name_request_span(method: str, route: str) -> None:
    """Name the request's server span after its route template, for a request answered
    without the router (which would have named it)."""
    span = trace.get_current_span()
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)


def context_of(headers: Headers) -> Context:
    """The context a command's trace headers carry (an empty one without them)."""
    carrier = {name: value.decode("latin-1") for name, value in headers}
    return _PROPAGATOR.extract(carrier)


def headers_of(span: Span) -> Headers:
    """The trace headers that make ``span`` the parent of whatever reads the record."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return tuple((name, value.encode()) for name, value in carrier.items())


Attributes: TypeAlias = Mapping[str, str | int]


class CommandTracer:
    """Makes the spans of commands: published by the gateway, applied, parked or drained by the
    consumers, each the child of the span that sent the command."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextlib.contextmanager
    def publish(self, topic: str, count: int) -> Iterator[Headers]:
        """A producer span around publishing ``count`` commands; yields their trace headers."""
        with self._tracer.start_as_current_span(
            f"publish {topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": count,
            },
        ) as span:
            yield headers_of(span)

    @contextlib.contextmanager
    def batch(self, role: str, parents: Iterable[Headers], count: int) -> Iterator[None]:
        """The current span while a consumer applies a batch, linked to the commands' senders.

        A batch holds commands of many traces, so it is a trace of its own; each command's
        span (:meth:`start`) is a child in the command's trace and links back here.
        """
        links: dict[int, Link] = {}
        for headers in parents:
            parent = trace.get_current_span(context_of(headers)).get_span_context()
            if parent.is_valid and len(links) < MAX_LINKS:
                links.setdefault(parent.span_id, Link(parent))
        with self._tracer.start_as_current_span(
            f"{role} batch",
            kind=SpanKind.INTERNAL,
            links=list(links.values()),
            attributes={"regionstore.role": role, "messaging.batch.message_count": count},
        ):
            yield

    def start(
        self,
        name: str,
        parent: Headers,
        attributes: Attributes,
        *,
        start_ns: int | None = None,
        kind: SpanKind = SpanKind.CONSUMER,
    ) -> Span:
        """A command's span, child of the span that sent it, linked to the batch in progress."""
        batch = trace.get_current_span().get_span_context()
        return self._tracer.start_span(
            name,
            context=context_of(parent),
            kind=kind,
            links=[Link(batch)] if batch.is_valid else (),
            attributes=attributes,
            start_time=start_ns,
        )


def end_all(spans: Sequence[Span], error: BaseException | None = None) -> None:
    """End spans together, marking them failed when ``error`` is given."""
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, str(error)[:200])
        span.end()


@contextlib.contextmanager
def ending(spans: Sequence[Span]) -> Iterator[None]:
    """End the spans once the body is done; failed, with the error, if it raised."""
    try:
        yield
    except BaseException as error:
        end_all(spans, error)
        raise
    end_all(spans)


class TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` to a log record made under a span.

    Installed by :func:`configure_tracing` only; a record that names its own ``trace_id``
    (a command's, in the consumers) keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is not None:
            return True
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True
