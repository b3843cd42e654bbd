"""One write, one trace: from the caller's ``traceparent`` through the gateway, the writer, the
replicator that parks it for an unavailable region, and recovery that drains it there.

The services are separate processes exporting with the standard OTLP exporter; the stack's
OTLP receiver (``otlp_sink``, regionstore_testing.traces) writes every span it gets to
RUN_DIR/traces/spans.jsonl, which this test reads.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regionstore_testing.traces import SpanLine, read_spans
from tests.regionstore_env import Env, customer, env
from tests.stack import REPO_ROOT

pytestmark = [pytest.mark.integration]
__all__ = ["env"]

SPANS = Path(os.environ.get("RUN_DIR", REPO_ROOT / ".run")) / "traces" / "spans.jsonl"
LOGS = SPANS.parent.parent / "logs"


async def _spans_until(
    ready: Callable[[list[SpanLine]], bool], within_s: float = 60
) -> list[SpanLine]:
    """The spans received so far, once ``ready`` holds of them (or when time is up)."""
    deadline = time.monotonic() + within_s
    while True:
        spans = read_spans(SPANS)
        if ready(spans) or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.2)


def _names(spans: list[SpanLine]) -> set[tuple[str, str]]:
    return {(span.service, span.name) for span in spans}


async def test_a_parked_and_drained_write_is_one_connected_trace(env: Env, stack: Any) -> None:
    if not SPANS.parent.parent.is_dir():
        pytest.skip(f"no local stack run directory at {SPANS.parent.parent}")
    body = customer()
    home = env.regions.home_of(body["customer_zip_code_prefix"])
    replica = env.regions.replicas_of(home)[0]
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    await env.set_status(replica, "unavailable")
    try:
        accepted = await env.write(
            "POST",
            "/v1/customers",
            json=body,
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        await env.consumed()
    finally:
        await env.set_status(replica, "available")
    report = await env.settle()
    assert report.clean, report

    wanted = {
        ("gateway", "POST /v1/customers"),
        ("gateway", "publish customers.commands"),
        ("writer", f"apply {home}"),
        ("replicator", f"park {replica}"),
        ("recovery", f"drain {replica}"),
    }

    def complete(spans: list[SpanLine]) -> bool:
        return wanted <= _names([s for s in spans if s.trace_id == trace_id])

    spans = await _spans_until(complete)
    mine = [span for span in spans if span.trace_id == trace_id]
    assert wanted <= _names(mine), sorted(_names(mine))

    # Connected: every span's parent is the caller's span or another span of the trace.
    ids = {span.span_id for span in mine}
    for span in mine:
        assert span.parent_span_id in ids | {caller_span}, span
    by_name = {(span.service, span.name): span for span in mine}
    server = by_name["gateway", "POST /v1/customers"]
    publish = by_name["gateway", "publish customers.commands"]
    park = by_name["replicator", f"park {replica}"]
    drain = by_name["recovery", f"drain {replica}"]
    assert server.parent_span_id == caller_span
    assert publish.parent_span_id == server.span_id
    assert by_name["writer", f"apply {home}"].parent_span_id == publish.span_id
    assert park.parent_span_id == publish.span_id
    assert drain.parent_span_id == park.span_id
    for span in (by_name["writer", f"apply {home}"], park, drain):
        assert span.attributes["regionstore.command_id"] == accepted["command_id"]

    # Each command span links to the batch its consumer applied it in (the batch links back to
    # the commands' senders, the first 128 of them: under a backlog, maybe not this one).
    def batches(spans: list[SpanLine]) -> dict[str, SpanLine]:
        return {span.span_id: span for span in spans if span.name.endswith(" batch")}

    applied = (by_name["writer", f"apply {home}"], park, drain)
    wanted_batches = {link["span_id"] for span in applied for link in span.links}
    spans = await _spans_until(lambda spans: wanted_batches <= set(batches(spans)))
    for span in applied:
        (link,) = span.links
        batch = batches(spans)[link["span_id"]]
        assert (batch.service, batch.trace_id) == (span.service, link["trace_id"])

    # The park's log line names the command and its trace.
    replicator_log = (LOGS / "replicator.log").read_text(errors="replace")
    parked = [line for line in replicator_log.splitlines() if accepted["command_id"] in line]
    assert any(trace_id in line for line in parked), parked
