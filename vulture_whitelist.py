"""Names that vulture cannot see used, because a framework or the standard library calls them.

Read by ``make lint`` (vulture), never imported. Each entry says who uses the name.
"""

from typing import Any

_: Any = None

_ = (
    _.schema_version,  # pydantic fields: written to every message on the wire
    _.location,  # pydantic field of the write response, read by clients
    _.repeats_suppressed,  # log record attributes, rendered by the JSON formatter
    _.repeats_window_s,
    _.capture_signals,  # uvicorn.Server hook, overridden so the service owns SIGTERM
    _.should_exit,  # read by uvicorn's serve loop
    _.settings_cls,  # pydantic-settings hook signature
    _.exc_info,  # context manager protocol signature
    _.handle_starttag,  # html.parser.HTMLParser callbacks
    _.handle_endtag,
    _.handle_data,
    _.get_extra_info,  # asyncio transport methods on a test fake
    _.pause_reading,
    _.resume_reading,
    _.transaction,  # redis-py signature on a test fake
    _.idempotency,  # a Clients key, read by key in regionstore_gateway.state.serving
    _.post_customer,  # a FastAPI route of the bench's bare comparison app
    _.formatTime,  # logging.Formatter hook, overridden for RFC 3339 UTC timestamps
    _.datefmt,  # its signature
    _._never_in_clear_once_sealed,  # a pydantic model serializer, called by pydantic
    _.audit_events,  # a response model field, filled by FastAPI
    _.do_GET,  # http.server handler hooks of the stack's OTLP receiver (regionstore_testing)
    _.do_POST,
    _.log_message,
)
