"""Send customers to the gateway's batch endpoint: bounded concurrency, retries, a summary.

The gateway is the one judge of what is valid: the loader sends what it is given and reports the
gateway's verdict per item, grouped by reason. Only what cannot even be sent (a CSV row whose zip
is not a number) is rejected locally, and it is reported the same way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from tqdm import tqdm  # type: ignore[import-untyped]

from regionstore_shared.schemas import Customer

BATCH_PATH = "/v1/customers:batch"
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class Row:
    """One customer to send, and where it came from (CSV line or ordinal) for error reports."""

    number: int
    customer: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the gateway, or the loader itself, refused, and why."""

    number: int
    reason: str
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How hard to push the gateway."""

    batch_size: int = 1000
    concurrency: int = 4
    retries: int = 5
    """Retries of one batch on 502/503/504 or a connection error, before the load stops."""
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.retries < 0:
            raise ValueError("batch_size and concurrency must be >= 1, retries >= 0")

    def backoff(self, attempt: int) -> float:
        """Exponential with jitter, so retrying workers do not hit the gateway in step."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return ceiling * (0.5 + random.random() / 2)


@dataclass
class LoadSummary:
    """What happened to every record of one load."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    rejections: Counter[str] = field(default_factory=Counter)
    """Rejection reasons and how often each was given (an item may give several)."""
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[Rejection] = field(default_factory=list)
    """The first rejections, with the record they concern."""
    stopped: str | None = None
    """Why the load stopped early (the gateway stayed unreachable); None if it ran to the end."""

    @property
    def processed(self) -> int:
        return self.accepted + self.rejected + self.failed

    @property
    def rate(self) -> float:
        """Records answered per second."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def reject(self, number: int, reasons: Sequence[str], customer_id: str | None = None) -> None:
        """Count one rejected record and each of its reasons."""
        self.rejected += 1
        self.rejections.update(reasons)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(Rejection(number, "; ".join(reasons), customer_id))


class GatewayUnavailableError(Exception):
    """The gateway stayed unreachable (or kept answering 503) through every retry."""

    def __init__(self, reason: str, summary: LoadSummary) -> None:
        super().__init__(reason)
        self.reason = reason
        self.summary = summary


class Progress(Protocol):
    def update(self, n: int) -> object: ...

    def set_postfix_str(self, s: str, refresh: bool = True) -> object: ...

    def close(self) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


def open_client(url: str, options: LoadOptions) -> httpx.AsyncClient:
    """An HTTP client for ``url`` with one connection per concurrent batch."""
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(options.timeout_s, connect=5.0),
        limits=httpx.Limits(
            max_connections=options.concurrency, max_keepalive_connections=options.concurrency
        ),
    )


def rows(customers: Iterable[Customer]) -> Iterator[Row]:
    """Customers numbered from 1, ready for ``load``."""
    for number, customer in enumerate(customers, start=1):
        yield Row(number, customer.model_dump(mode="json"))


async def check_reachable(client: httpx.AsyncClient) -> None:
    """Raise ``httpx.TransportError`` if nothing answers at the client's base URL."""
    await client.get("/healthz")


async def load(
    records: Iterable[Row | Rejection],
    client: httpx.AsyncClient,
    *,
    options: LoadOptions | None = None,
    total: int | None = None,
    progress: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> LoadSummary:
    """Send ``records`` in batches; raise ``GatewayUnavailableError`` if the gateway goes away.

    ``records`` is consumed lazily, so a large CSV is never held in memory: about
    ``2 * concurrency`` batches exist at a time (in flight, queued, being read).
    """
    loader = _Loader(client, options or LoadOptions(), sleep)
    bar: Progress = tqdm(
        total=total, unit="rec", unit_scale=True, disable=not progress, dynamic_ncols=True
    )
    started = time.perf_counter()
    try:
        await loader.run(records, bar)
    except ExceptionGroup as group:
        # The task group wraps what the source (a CSV) or a worker raised; callers want the error.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        loader.summary.elapsed_s = time.perf_counter() - started
        bar.close()
    if loader.summary.stopped is not None:
        raise GatewayUnavailableError(loader.summary.stopped, loader.summary)
    return loader.summary


class _Loader:
    def __init__(self, client: httpx.AsyncClient, options: LoadOptions, sleep: Sleep) -> None:
        self.client = client
        self.options = options
        self.sleep = sleep
        self.summary = LoadSummary()

    async def run(self, records: Iterable[Row | Rejection], bar: Progress) -> None:
        source = iter(records)
        queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(maxsize=self.options.concurrency)
        async with asyncio.TaskGroup() as group:
            for _ in range(self.options.concurrency):
                group.create_task(self._work(queue, bar))
            done = False
            while not done and self.summary.stopped is None:
                # Generating or parsing a batch is CPU work (pydantic validates every generated
                # customer); a thread keeps the event loop free to answer the workers meanwhile.
                batch, rejections, done = await asyncio.to_thread(self._take, source)
                for rejection in rejections:
                    self.summary.reject(rejection.number, [rejection.reason], rejection.customer_id)
                bar.update(len(rejections))
                if batch:
                    await queue.put(batch)
            for _ in range(self.options.concurrency):
                await queue.put(None)

    def _take(self, source: Iterator[Row | Rejection]) -> tuple[list[Row], list[Rejection], bool]:
        """The next batch, the local rejections met on the way, and whether the source is done."""
        batch: list[Row] = []
        rejections: list[Rejection] = []
        for record in source:
            if isinstance(record, Rejection):
                rejections.append(record)
            else:
                batch.append(record)
            if len(batch) + len(rejections) >= self.options.batch_size:
                return batch, rejections, False
        return batch, rejections, True

    async def _work(self, queue: asyncio.Queue[list[Row] | None], bar: Progress) -> None:
        while (batch := await queue.get()) is not None:
            if self.summary.stopped is not None:
                continue  # drain, so the producer never blocks on a full queue
            await self._send(batch)
            bar.set_postfix_str(
                f"accepted={self.summary.accepted} rejected={self.summary.rejected}"
                f" failed={self.summary.failed}",
                refresh=False,
            )
            bar.update(len(batch))

    async def _send(self, batch: list[Row]) -> None:
        body = {"items": [{"op": "upsert", "customer": row.customer} for row in batch]}
        reason = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                await self.sleep(self.options.backoff(attempt - 1))
            if self.summary.stopped is not None:
                return
            try:
                response = await self.client.post(BATCH_PATH, json=body)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
                url = str(self.client.base_url).rstrip("/")
                reason = f"cannot reach the gateway at {url}: {_describe(error)}"
                continue
            if response.status_code not in RETRY_STATUSES:
                self._record(batch, response)
                return
            reason = f"the gateway answered {_http_reason(response)}"
        self.summary.stopped = f"{reason} (after {self.options.retries} retries)"

    def _record(self, batch: Sequence[Row], response: httpx.Response) -> None:
        results = _results(response)
        if results is None:
            reason = f"the gateway answered {_http_reason(response)}"
            self.summary.failed += len(batch)
            self.summary.failures[reason] += len(batch)
            return
        for result in results:
            row = batch[result["index"]]
            status = result.get("status")
            if status == "accepted":
                self.summary.accepted += 1
                continue
            reasons = [_error_reason(error) for error in result.get("errors") or ()] or [
                f"{status} without a reason"
            ]
            if status == "rejected":
                customer_id = result.get("customer_id") or row.customer.get("customer_id")
                self.summary.reject(row.number, reasons, customer_id)
            else:
                self.summary.failed += 1
                self.summary.failures.update(reasons)


def _results(response: httpx.Response) -> list[dict[str, Any]] | None:
    """Per-item results of a 202 or an all-rejected 422; None for any other answer."""
    if response.status_code not in (202, 422):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    results = body.get("results") if isinstance(body, dict) else None
    return results if isinstance(results, list) else None


def _error_reason(error: dict[str, Any]) -> str:
    """'customer_zip_code_prefix: zip prefix 500 is outside every region (...)'."""
    loc = [str(part) for part in error.get("loc", ())]
    # ["body", "items", 3, "upsert", "customer", "customer_state"] -> "customer_state": the
    # field inside the item, without the index and the union's tag.
    if loc[:2] == ["body", "items"] and len(loc) > 2:
        where = loc[3:]
    else:
        where = loc[1:] if loc[:1] == ["body"] else loc
    if where[:1] in (["upsert"], ["delete"]):
        where = where[1:]
    if where[:1] == ["customer"] and len(where) > 1:
        where = where[1:]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{'.'.join(where) or 'item'}: {message}"


def _http_reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        detail = "; ".join(_error_reason(e) for e in detail if isinstance(e, dict))
    text = str(detail) if detail else response.text[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
