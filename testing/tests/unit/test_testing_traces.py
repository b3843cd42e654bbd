"""The local stack's OTLP receiver: what it keeps of each span it is sent."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, format_span_id, format_trace_id

from regionstore_testing.traces import SpanLine, handler_for, read_spans, span_lines


def test_keeps_the_service_ids_parent_links_and_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "writer"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("other") as other:
        pass
    with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as parent:
        child = tracer.start_span(
            "apply region_1",
            kind=SpanKind.CONSUMER,
            links=[Link(other.get_span_context())],
            attributes={"regionstore.version": 7, "regionstore.region": "region_1"},
        )
        child.end()
    by_name = {line.name: line for line in span_lines(encode_spans(exporter.get_finished_spans()))}
    apply = by_name["apply region_1"]
    assert apply.service == "writer"
    assert apply.kind == "consumer"
    assert apply.trace_id == format_trace_id(parent.get_span_context().trace_id)
    assert apply.parent_span_id == format_span_id(parent.get_span_context().span_id)
    assert apply.attributes == {"regionstore.version": 7, "regionstore.region": "region_1"}
    assert apply.links == [
        {
            "trace_id": format_trace_id(other.get_span_context().trace_id),
            "span_id": format_span_id(other.get_span_context().span_id),
        }
    ]
    assert by_name["publish"].parent_span_id is None
    assert apply.start_ns <= apply.end_ns


def test_reads_back_what_it_wrote_and_skips_a_line_cut_short(tmp_path: Path) -> None:
    line = SpanLine("gateway", "POST", "server", "ab" * 16, "cd" * 8, None, 1, 2, {}, [])
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(asdict(line)) + "\n" + '{"service": "wri')
    assert read_spans(path) == [line]


def test_nothing_written_yet(tmp_path: Path) -> None:
    assert read_spans(tmp_path / "spans.jsonl") == []


def test_keeps_each_exporters_connection_open(tmp_path: Path) -> None:
    # HTTP/1.0 closes the connection after every answer: each export would open a new one.
    assert handler_for(tmp_path / "spans.jsonl").protocol_version == "HTTP/1.1"
