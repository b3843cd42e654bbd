"""A minimal OTLP/HTTP trace receiver for the local stack, and a reader of what it kept.

The services export their spans with the standard OTLP exporter to this receiver
(``make up`` starts it as ``otlp_sink`` and points ``OTEL_EXPORTER_OTLP_ENDPOINT`` at it); it
appends one JSON line per span to a file, which a test or a developer reads
(:func:`read_spans`, or ``grep <trace id>``). An OpenTelemetry Collector would do the same with
its file exporter, but cannot be built here without the contrib distribution's hundreds of Go
modules; this keeps a dozen fields of each span and nothing else.

    python -m regionstore_testing.traces --port 4318 --out .run/traces/spans.jsonl
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/v1/traces"
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True, slots=True)
class SpanLine:
    """One received span, as the receiver writes it."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[dict[str, str]]


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [_value(v) for v in value.array_value.values]
    if field == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, field)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def span_lines(request: ExportTraceServiceRequest) -> list[SpanLine]:
    """Every span of an export request, with its service's name."""
    lines = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(
                    SpanLine(
                        service=service,
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        links=[
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                            for link in span.links
                        ],
                    )
                )
    return lines


def read_spans(path: Path) -> list[SpanLine]:
    """The spans the receiver wrote to ``path`` so far (none if it wrote nothing yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [SpanLine(**json.loads(line)) for line in text.splitlines() if line.endswith("}")]


def handler_for(out: Path) -> type[BaseHTTPRequestHandler]:
    """The request handler that appends the spans of each export to ``out``."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive: each service exports every second, and under HTTP/1.0 (the default) every
        # export opened a TCP connection of its own, a cost the services paid for the sink.
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/healthz" else 404, b"", "text/plain")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != TRACES_PATH or "json" in (self.headers.get("Content-Type") or ""):
                self._answer(404 if self.path != TRACES_PATH else 415, b"", "text/plain")
                return
            request = ExportTraceServiceRequest.FromString(body)
            text = "".join(json.dumps(asdict(line)) + "\n" for line in span_lines(request))
            with lock, out.open("a") as file:
                file.write(text)
            reply = ExportTraceServiceResponse().SerializeToString()
            self._answer(200, reply, "application/x-protobuf")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per export would drown the stack's logs

    return Handler


def serve(port: int, out: Path) -> None:
    """Receive OTLP/HTTP protobuf exports on ``port`` until killed, appending spans to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ThreadingHTTPServer(("127.0.0.1", port), handler_for(out)).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.out)


if __name__ == "__main__":
    main()
