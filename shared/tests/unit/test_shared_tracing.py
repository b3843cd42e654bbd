"""Tracing: the settings that switch it on, the trace headers a command carries, and the spans an
apply makes, collected by an in-memory exporter."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import pytest
from aiokafka.errors import KafkaTimeoutError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from regionstore_shared.apply import BatchApplier, Envelope, Suspicion
from regionstore_shared.documents import Collection
from regionstore_shared.status import NodeStatus
from regionstore_shared.tracing import (
    CommandTracer,
    TraceIds,
    TraceSettings,
    configure_tracing,
    context_of,
    trace_headers,
    trace_id_of,
)
from shared.tests.fakes import FakeCollection, FakeStatus
from shared.tests.unit.test_shared_apply import (
    RecordingDeadLetters,
    RecordingParker,
    every_target,
    upsert,
)

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stack or a shell that traces must not switch these tests' settings on.
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


class TestTraceSettings:
    def test_off_unless_an_exporter_or_an_endpoint_is_set(self) -> None:
        assert TraceSettings().exporters() == []

    def test_an_otlp_endpoint_alone_switches_otlp_on(self) -> None:
        settings = TraceSettings(exporter_otlp_endpoint="http://127.0.0.1:4318")
        assert settings.exporters() == ["otlp"]

    def test_a_traces_endpoint_alone_switches_otlp_on(self) -> None:
        settings = TraceSettings(exporter_otlp_traces_endpoint="http://c:4318/v1/traces")
        assert settings.exporters() == ["otlp"]

    def test_none_wins_over_an_endpoint(self) -> None:
        settings = TraceSettings(traces_exporter="none", exporter_otlp_endpoint="http://c:4318")
        assert settings.exporters() == []

    def test_sdk_disabled_wins_over_everything(self) -> None:
        settings = TraceSettings(sdk_disabled=True, traces_exporter="otlp,console")
        assert settings.exporters() == []

    def test_a_list_of_exporters(self) -> None:
        assert TraceSettings(traces_exporter=" otlp , console").exporters() == ["otlp", "console"]

    def test_read_from_the_standard_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-a")
        settings = TraceSettings()
        assert settings.exporters() == ["otlp"]
        assert settings.service_name == "gw-a"


class TestConfigureTracing:
    def test_off_installs_nothing(self) -> None:
        assert configure_tracing("writer", TraceSettings()) is None

    def test_an_unknown_exporter_is_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER=zipkin"):
            configure_tracing("writer", TraceSettings(traces_exporter="zipkin"))

    def test_otlp_over_grpc_is_refused(self) -> None:
        settings = TraceSettings(traces_exporter="otlp", exporter_otlp_protocol="grpc")
        with pytest.raises(ValueError, match="only http/protobuf"):
            configure_tracing("writer", settings)


class TestHeaders:
    def test_only_trace_headers_are_kept(self) -> None:
        record = [("regionstore-park-reason", b"x"), ("traceparent", TRACEPARENT)]
        assert trace_headers(record) == (("traceparent", TRACEPARENT),)

    def test_no_headers(self) -> None:
        assert trace_headers(None) == ()

    def test_trace_id_of_a_traceparent(self) -> None:
        assert trace_id_of((("traceparent", TRACEPARENT),)) == "0af7651916cd43dd8448eb211c80319c"

    @pytest.mark.parametrize("value", [b"garbage", b"00-abc-def-01"])
    def test_a_malformed_traceparent_has_no_trace_id(self, value: bytes) -> None:
        assert trace_id_of((("traceparent", value),)) is None

    def test_the_context_of_headers_is_the_sender_span(self) -> None:
        context = context_of((("traceparent", TRACEPARENT),))
        parent = trace.get_current_span(context).get_span_context()
        assert parent.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert parent.span_id == 0xB7AD6B7169203331


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[CommandTracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield CommandTracer(provider.get_tracer("test"))
    provider.shutdown()


def published(tracer: CommandTracer, envelope: Envelope) -> Envelope:
    """The envelope as the gateway sends it: under a publish span's trace headers."""
    with tracer.publish("customers.commands", 1) as headers:
        return envelope.traced(headers)


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if (s.name or "").startswith(prefix)]


def applier(
    tracer: CommandTracer,
    *,
    statuses: dict[str, NodeStatus] | None = None,
    parker: RecordingParker | None = None,
    dead_letters: RecordingDeadLetters | None = None,
    stores: dict[str, FakeCollection] | None = None,
    role: str = "writer",
) -> BatchApplier:
    stores = stores or {name: FakeCollection() for name in ("region_1", "region_3")}
    return BatchApplier(
        collections=cast("Mapping[str, Collection]", stores),
        status=FakeStatus(statuses),
        suspicion=Suspicion(3.0),
        parker=parker or RecordingParker(),
        dead_letters=dead_letters or RecordingDeadLetters(),
        role=role,
        tracer=tracer,
    )


class TestApplySpans:
    async def test_each_region_write_is_a_child_of_the_sender_linked_to_its_batch(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        envelope = published(tracer, upsert(5))
        (sender,) = spans_named(exporter, "publish")
        await applier(tracer).apply([envelope], every_target)
        (batch,) = spans_named(exporter, "writer batch")
        applies = spans_named(exporter, "apply ")
        assert sorted(s.name or "" for s in applies) == ["apply region_1", "apply region_3"]
        for span in applies:
            assert span.parent is not None
            assert span.parent.span_id == sender.context.span_id
            assert span.context.trace_id == sender.context.trace_id
            assert [link.context.span_id for link in span.links] == [batch.context.span_id]
            assert span.kind is SpanKind.CONSUMER
            assert span.attributes is not None
            assert span.attributes["regionstore.outcome"] == "applied"
            assert span.attributes["regionstore.command_id"] == str(envelope.command.command_id)
        assert [link.context.span_id for link in batch.links] == [sender.context.span_id]

    async def test_a_batch_links_each_sender_once(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        with tracer.publish("customers.commands", 2) as headers:
            first, second = upsert(5).traced(headers), upsert(6).traced(headers)
        other = published(tracer, upsert(7))
        await applier(tracer).apply([first, second, other], every_target)
        (batch,) = spans_named(exporter, "writer batch")
        assert len(batch.links) == 2
        assert batch.attributes is not None
        assert batch.attributes["messaging.batch.message_count"] == 3

    async def test_a_parked_copy_carries_its_park_span_as_parent(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        parker = RecordingParker()
        statuses = {"region_3": NodeStatus.UNAVAILABLE}
        envelope = published(tracer, upsert(5))
        await applier(tracer, statuses=statuses, parker=parker).apply([envelope], every_target)
        (park,) = spans_named(exporter, "park region_3")
        (sender,) = spans_named(exporter, "publish")
        assert park.parent is not None
        assert park.parent.span_id == sender.context.span_id
        assert park.kind is SpanKind.PRODUCER
        assert park.attributes is not None
        assert park.attributes["regionstore.park_reason"] == "marked_unavailable"
        ((region, (copy,), _),) = parker.parked
        parent = trace.get_current_span(context_of(copy.trace)).get_span_context()
        assert (region, parent.span_id) == ("region_3", park.context.span_id)
        assert copy.trace_id == envelope.trace_id

    async def test_a_park_that_fails_ends_its_spans_failed(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        class FailingParker(RecordingParker):
            async def park(self, region: str, envelopes: Sequence[Envelope], reason: str) -> None:
                raise KafkaTimeoutError("no ack")

        statuses = {"region_3": NodeStatus.UNAVAILABLE}
        failing = applier(tracer, statuses=statuses, parker=FailingParker())
        with pytest.raises(KafkaTimeoutError):
            await failing.apply([published(tracer, upsert(5))], every_target)
        (park,) = spans_named(exporter, "park region_3")
        assert park.status.status_code is StatusCode.ERROR
        assert [event.name for event in park.events] == ["exception"]

    async def test_a_drain_continues_the_trace_under_the_park_span(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        parker = RecordingParker()
        statuses = {"region_3": NodeStatus.UNAVAILABLE}
        envelope = published(tracer, upsert(5))
        await applier(tracer, statuses=statuses, parker=parker).apply([envelope], every_target)
        ((_, (copy,), _),) = parker.parked
        await applier(tracer, role="recovery").apply([copy], every_target)
        (park,) = spans_named(exporter, "park region_3")
        (drain,) = spans_named(exporter, "drain region_3")
        assert drain.parent is not None
        assert drain.parent.span_id == park.context.span_id
        assert drain.context.trace_id == park.context.trace_id

    async def test_a_refused_command_gets_a_dead_letter_span_and_keeps_its_headers(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        stores = {"region_1": FakeCollection(), "region_3": FakeCollection()}
        envelope = published(tracer, upsert(5))
        stores["region_3"].refuse[envelope.command.key] = 121
        dead_letters = RecordingDeadLetters()
        await applier(tracer, stores=stores, dead_letters=dead_letters).apply(
            [envelope], every_target
        )
        (span,) = spans_named(exporter, "dead-letter region_3")
        assert span.attributes is not None
        assert span.attributes["regionstore.outcome"] == "dead_lettered"
        ((_, rejected),) = dead_letters.sent
        assert rejected.envelope.trace == envelope.trace

    async def test_a_command_without_trace_headers_starts_its_own_trace(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        await applier(tracer).apply([upsert(5)], every_target)
        (batch,) = spans_named(exporter, "writer batch")
        assert batch.links == ()
        for span in spans_named(exporter, "apply "):
            assert span.parent is None


class TestPublish:
    def test_the_headers_name_the_publish_span(
        self, tracer: CommandTracer, exporter: InMemorySpanExporter
    ) -> None:
        with tracer.publish("customers.commands", 3) as headers:
            pass
        (span,) = exporter.get_finished_spans()
        assert span.kind is SpanKind.PRODUCER
        assert trace_id_of(headers) == trace.format_trace_id(span.context.trace_id)
        assert dict(headers)["traceparent"].split(b"-")[2] == (
            trace.format_span_id(span.context.span_id).encode()
        )


class TestTraceIds:
    def test_a_line_under_a_span_carries_its_ids(self, tracer: CommandTracer) -> None:
        record = logging.makeLogRecord({"msg": "x"})
        with tracer.publish("t", 1) as headers:
            TraceIds().filter(record)
        assert getattr(record, "trace_id", None) == trace_id_of(headers)
        assert isinstance(getattr(record, "span_id", None), str)

    def test_a_line_outside_any_span_is_left_alone(self) -> None:
        record = logging.makeLogRecord({"msg": "x"})
        assert TraceIds().filter(record)
        assert not hasattr(record, "trace_id")

    def test_a_line_that_names_its_command_trace_keeps_it(self, tracer: CommandTracer) -> None:
        record = logging.makeLogRecord({"msg": "x", "trace_id": "mine"})
        with tracer.publish("t", 1):
            TraceIds().filter(record)
        assert getattr(record, "trace_id", None) == "mine"
