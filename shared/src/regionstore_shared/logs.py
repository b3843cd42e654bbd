"""Structured JSON log lines, one per event, so a command id can be followed across services.

A dependency that is down gives one warning when it goes down, one when it comes back, and a
summary every ``summary_every_s`` seconds in between, not one line per retry: :class:`Outages`
does that for the failures this code sees (a region's writes, Redis, Kafka's connections), and
:class:`RepeatFilter` rate-limits the retry loops of libraries and background tasks by message
template (aiokafka alone wrote ~1,600 lines per consumer during a Kafka outage of a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: Loggers whose retry loops repeat one message template many times a second while a
#: dependency is down: aiokafka's, and our own background probes.
REPEATING_LOGGERS = ("aiokafka", "regionstore_shared.backlog", "regionstore_shared.status_events")

#: aiokafka's client logs under the bare "aiokafka" name, and only about reaching brokers
#: ("Unable connect to node ...", "Unable to update metadata ..."): an outage of Kafka itself.
KAFKA_CONNECTION_LOGGERS: Mapping[str, str] = {"aiokafka": "kafka"}


@dataclass(slots=True)
class _Outage:
    since: float
    last_line: float
    error: str
    failures: int = 1
    unreported: int = 0


class Outages:
    """Down, summary and back lines per dependency (``kafka``, ``redis``, ``region_N``).

    Call :meth:`failed` on every failure and :meth:`ok` on every success; both are cheap
    enough for every batch. The first failure logs "<dependency> down"; later ones are counted,
    and the first one after ``summary_every_s`` logs "<dependency> still down" with how many
    failures it stands for. The first success after a failure logs "<dependency> back".
    """

    def __init__(
        self,
        *,
        summary_every_s: float = 30.0,
        clock: Clock = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._every_s = summary_every_s
        self._clock = clock
        self._log = logger
        self._down: dict[str, _Outage] = {}
        # Failures can be reported from a logging filter, in whatever thread logged.
        self._lock = threading.Lock()

    def is_down(self, dependency: str) -> bool:
        """Whether a failure of the dependency was reported and no success since."""
        return dependency in self._down

    def failed(self, dependency: str, error: object) -> None:
        """Report a failure of ``dependency``; logs only the first and the periodic summary."""
        now = self._clock()
        reason = str(error)[:500]
        with self._lock:
            outage = self._down.get(dependency)
            if outage is None:
                self._down[dependency] = _Outage(since=now, last_line=now, error=reason)
                first = True
            else:
                outage.failures += 1
                outage.unreported += 1
                outage.error = reason
                if now - outage.last_line < self._every_s:
                    return
                outage.last_line = now
                suppressed, outage.unreported = outage.unreported, 0
                down_for_s = round(now - outage.since, 1)
                first = False
        if first:
            self._log.warning(
                "%s down", dependency, extra={"dependency": dependency, "error": reason}
            )
            return
        self._log.warning(
            "%s still down",
            dependency,
            extra={
                "dependency": dependency,
                "failures": suppressed,
                "down_for_s": down_for_s,
                "error": reason,
            },
        )

    def ok(self, dependency: str) -> None:
        """Report a success of ``dependency``; logs "<dependency> back" if it was down."""
        if dependency not in self._down:
            return
        with self._lock:
            outage = self._down.pop(dependency, None)
        if outage is None:
            return
        self._log.warning(
            "%s back",
            dependency,
            extra={
                "dependency": dependency,
                "failures": outage.failures,
                "down_for_s": round(self._clock() - outage.since, 1),
            },
        )


@dataclass(slots=True)
class _Seen:
    window_start: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets one record per logger and message template through per window, with a count.

    Applies to records of ``loggers`` (and their children). The first record of a template
    passes; the same template is then dropped until ``every_s`` seconds have passed, and the
    first record after that passes with ``repeats_suppressed``: how many were dropped in
    between. The template is the record's unformatted message, so "Unable connect to node with
    id %s: %s" is one kind whatever the node and error.

    Records of ``outage_loggers`` (logger name to dependency) at WARNING or above are not
    logged at all but reported to ``outages`` as failures of that dependency, which logs the
    down and summary lines; something that sees the dependency work calls ``outages.ok``.
    """

    max_templates = 1024

    def __init__(
        self,
        *,
        every_s: float = 30.0,
        loggers: Iterable[str] = REPEATING_LOGGERS,
        outages: Outages | None = None,
        outage_loggers: Mapping[str, str] = KAFKA_CONNECTION_LOGGERS,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__()
        self._every_s = every_s
        self._prefixes = tuple(loggers)
        self._outages = outages
        self._outage_loggers = dict(outage_loggers) if outages is not None else {}
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is logged; a summary record gains ``repeats_suppressed``."""
        name = record.name
        dependency = self._outage_loggers.get(name)
        if dependency is not None and self._outages is not None:
            if record.levelno >= logging.WARNING:
                self._outages.failed(dependency, f"{name}: {record.getMessage()}")
                return False
        if not self._applies_to(name):
            return True
        return self._admit(record)

    def _applies_to(self, name: str) -> bool:
        if not name.startswith(self._prefixes):
            return False
        return any(name == p or name.startswith(f"{p}.") for p in self._prefixes)

    def _admit(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._forget_old(now)
                self._seen[key] = _Seen(now)
                return True
            if now - seen.window_start < self._every_s:
                seen.suppressed += 1
                return False
            suppressed, seen.suppressed, seen.window_start = seen.suppressed, 0, now
        if suppressed:
            record.repeats_suppressed = suppressed
            record.repeats_window_s = self._every_s
        return True

    def _forget_old(self, now: float) -> None:
        # Templates are few, but a library that formats its own messages makes each one new.
        if len(self._seen) < self.max_templates:
            return
        for key, seen in list(self._seen.items()):
            if now - seen.window_start >= self._every_s:
                del self._seen[key]
        if len(self._seen) >= self.max_templates:
            self._seen.clear()


def utc_timestamp(created: float) -> str:
    """A log line's ``ts``: RFC 3339 in UTC, to the millisecond (``2026-12-06T10:15:02.123Z``).

    logging's own asctime is local time without its offset, which cannot be compared across
    machines or time zones.
    """
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


class _JsonLines(JsonFormatter):
    """JSON lines whose ``ts`` is :func:`utc_timestamp`."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


def json_line(
    *, created: float, level: str, logger: str, message: str, service: str, **fields: object
) -> str:
    """One log line shaped as :func:`configure_logging` writes them, for a writer that formats
    its own lines (:func:`write_lines`)."""
    head = {"ts": utc_timestamp(created), "level": level, "logger": logger, "message": message}
    return json.dumps({**head, "service": service, **fields}) + "\n"


def write_lines(text: str) -> None:
    """Write lines made by :func:`json_line` where the root logger's handlers write (stdout
    once :func:`configure_logging` ran), under each handler's lock: lines never interleave."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            with handler.lock or contextlib.nullcontext():
                handler.stream.write(text)
                handler.flush()


def configure_logging(
    service: str,
    level: str = "INFO",
    *,
    summary_every_s: float = 30.0,
    outages: Outages | None = None,
) -> None:
    """Send every log record to stdout as one JSON object tagged with the service name.

    Retry loops are rate-limited (:class:`RepeatFilter`, one summary per ``summary_every_s``).
    With ``outages``, Kafka connection errors become its "kafka down" lines; pass it only where
    something reports ``outages.ok("kafka")``, or the service never logs Kafka back.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        _JsonLines(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp=False,
            # uvicorn adds an ANSI-coloured copy of each message; the plain one is enough.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
    )
    handler.addFilter(RepeatFilter(every_s=summary_every_s, outages=outages))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "pymongo", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
