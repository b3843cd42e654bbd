"""Send customers to the gateway's batch endpoint: bounded concurrency, safe retries, a summary.

The gateway is the one judge of what is valid: the loader sends what it is given and reports the
gateway's verdict per item, grouped by reason. Only what cannot even be sent (a CSV row whose zip
is not a number) is rejected locally, and it is reported the same way.

Every batch request carries one ``Idempotency-Key`` made for it, and a retry (after a timeout,
a 5xx or an item answered ``unknown``) sends the same batch with the same key: the gateway
answers the items an earlier attempt got accepted from its record and publishes the others as
the same commands, so a retry is the same write again, never a second one. One key per batch,
not per item, keeps the gateway's Redis at a few hundred bytes per thousand customers. An item
whose outcome is still unknown when the retries run out is counted as ``unknown``: it may have
been taken.

A 429 (the consumers are behind, or the key is over its rate) took nothing: the batch waits as
long as the gateway asks and is sent again, without using up a retry, for up to
``busy_patience_s`` in all.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from regionstore_shared.schemas import Customer

BATCH_PATH = "/v1/customers:batch"
KEY_HEADER = "Idempotency-Key"
# Answers after which a batch is sent again, with the same key.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The gateway is busy: nothing was taken, and waiting is what it asks.
BUSY_STATUS = 429
# Answers (and errors) after which the request may have been taken although nothing says so.
MAYBE_TAKEN_STATUSES = frozenset({502, 504})
AUTH_STATUSES = frozenset({401, 403})
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
    """Retries of one batch's unanswered items (5xx, no connection, outcome unknown)."""
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    timeout_s: float = 60.0
    busy_patience_s: float = 600.0
    """How long in all one batch waits on 429s before the load stops."""

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
    unknown: int = 0
    """Records that may or may not have been taken: the gateway never said, through every retry."""
    failed: int = 0
    elapsed_s: float = 0.0
    rejections: Counter[str] = field(default_factory=Counter)
    """Rejection reasons and how often each was given (an item may give several)."""
    failures: Counter[str] = field(default_factory=Counter)
    unknowns: Counter[str] = field(default_factory=Counter)
    examples: list[Rejection] = field(default_factory=list)
    """The first rejections, with the record they concern."""
    stopped: str | None = None
    """Why the load stopped early (the gateway stayed unwell); None if it ran to the end."""

    @property
    def processed(self) -> int:
        return self.accepted + self.rejected + self.unknown + self.failed

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
    """The gateway stayed unwell (unreachable, 5xx, refusing the key) through every retry."""

    def __init__(self, reason: str, summary: LoadSummary) -> None:
        super().__init__(reason)
        self.reason = reason
        self.summary = summary


Sleep = Callable[[float], Awaitable[None]]
OnProgress = Callable[[int, LoadSummary], None]
"""Called with how many records were just answered, and the summary so far."""


def open_client(
    url: str,
    options: LoadOptions,
    api_key: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for ``url`` with one connection per concurrent batch, sending the key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        base_url=url,
        headers=headers,
        transport=transport,
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
    on_progress: OnProgress | None = None,
    sleep: Sleep = asyncio.sleep,
) -> LoadSummary:
    """Send ``records`` in batches; raise ``GatewayUnavailableError`` if the gateway goes away.

    ``records`` is consumed lazily, so a large CSV is never held in memory: about
    ``2 * concurrency`` batches exist at a time (in flight, queued, being read).
    """
    loader = _Loader(client, options or LoadOptions(), sleep, on_progress or _quiet)
    started = time.perf_counter()
    try:
        await loader.run(records)
    except ExceptionGroup as group:
        # The task group wraps what the source (a CSV) or a worker raised; callers want the error.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        loader.summary.elapsed_s = time.perf_counter() - started
    if loader.summary.stopped is not None:
        raise GatewayUnavailableError(loader.summary.stopped, loader.summary)
    return loader.summary


def _quiet(done: int, summary: LoadSummary) -> None:
    pass


@dataclass(slots=True)
class _Item:
    """A row on its way: its place in its batch, and what the attempts at it said."""

    index: int
    row: Row
    maybe_taken: bool = False
    """Some attempt may have been taken: if no answer comes, its outcome is unknown."""
    reasons: list[str] = field(default_factory=list)
    """Why the last attempt did not settle it."""

    def body(self) -> dict[str, Any]:
        return {"op": "upsert", "customer": self.row.customer}


@dataclass(slots=True)
class _Patience:
    """How much longer one batch may wait on 429s."""

    left_s: float


class _Loader:
    def __init__(
        self, client: httpx.AsyncClient, options: LoadOptions, sleep: Sleep, on_progress: OnProgress
    ) -> None:
        self.client = client
        self.options = options
        self.sleep = sleep
        self.on_progress = on_progress
        self.summary = LoadSummary()

    async def run(self, records: Iterable[Row | Rejection]) -> None:
        source = iter(records)
        queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(maxsize=self.options.concurrency)
        async with asyncio.TaskGroup() as group:
            for _ in range(self.options.concurrency):
                group.create_task(self._work(queue))
            done = False
            while not done and self.summary.stopped is None:
                # Generating or parsing a batch is CPU work (pydantic validates every generated
                # customer); a thread keeps the event loop free to answer the workers meanwhile.
                batch, rejections, done = await asyncio.to_thread(self._take, source)
                for rejection in rejections:
                    self.summary.reject(rejection.number, [rejection.reason], rejection.customer_id)
                if rejections:
                    self.on_progress(len(rejections), self.summary)
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

    async def _work(self, queue: asyncio.Queue[list[Row] | None]) -> None:
        while (batch := await queue.get()) is not None:
            if self.summary.stopped is not None:
                continue  # drain, so the producer never blocks on a full queue
            before = self.summary.processed
            await self._send([_Item(index, row) for index, row in enumerate(batch)])
            self.on_progress(self.summary.processed - before, self.summary)

    async def _send(self, batch: list[_Item]) -> None:
        """Send until every item is answered for certain, or the retries run out.

        Every attempt sends the whole batch under the one key made for it, as the gateway
        needs to tell a retry from another request; only the items not yet settled count.
        """
        body = {"items": [item.body() for item in batch]}
        headers = {KEY_HEADER: uuid.uuid4().hex}
        todo = list(batch)
        reason = ""
        asked_wait = 0.0
        busy = _Patience(self.options.busy_patience_s)
        for attempt in range(self.options.retries + 1):
            if attempt:
                await self.sleep(max(self.options.backoff(attempt - 1), asked_wait))
            if self.summary.stopped is not None:
                self._give_up([item for item in todo if item.maybe_taken])
                return
            response = await self._post(body, headers, todo, busy)
            if isinstance(response, str):
                reason = response
                continue
            if response.status_code in AUTH_STATUSES:
                # Every batch would get the same answer. Items are left unsent, unless an
                # earlier attempt may have been taken.
                self._give_up([item for item in todo if item.maybe_taken])
                self.summary.stopped = _refusal(response)
                return
            asked_wait = _retry_after(response)
            results = _results(response)
            if results is None:
                reason = f"the gateway answered {_http_reason(response)}"
                if response.status_code not in RETRY_STATUSES:
                    self._fail(todo, reason)
                    return
                maybe_taken = response.status_code in MAYBE_TAKEN_STATUSES
                _unanswered(todo, reason, maybe_taken=maybe_taken)
                continue
            todo = self._record(batch, todo, results)
            if not todo:
                return
            reason = f"{todo[0].reasons[0]} ({len(todo)} item(s) unsettled)"
        self._give_up(todo)
        self.summary.stopped = f"{reason} (after {self.options.retries} retries)"

    async def _post(
        self, body: dict[str, Any], headers: dict[str, str], todo: list[_Item], busy: _Patience
    ) -> httpx.Response | str:
        """One attempt: the gateway's answer, or why none came (``todo`` then says whether it
        may have been taken). A 429 took nothing: it is waited out here, not a retry spent."""
        while True:
            try:
                response = await self.client.post(BATCH_PATH, json=body, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
                url = str(self.client.base_url).rstrip("/")
                reason = f"cannot reach the gateway at {url}: {_describe(error)}"
                connect = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                _unanswered(todo, reason, maybe_taken=not connect)
                return reason
            if response.status_code != BUSY_STATUS or busy.left_s <= 0:
                return response
            wait_s = max(_retry_after(response), self.options.backoff_s)
            busy.left_s -= wait_s
            await self.sleep(wait_s)

    def _record(
        self, batch: list[_Item], todo: list[_Item], results: list[dict[str, Any]]
    ) -> list[_Item]:
        """Count the items this answer settles; return those to send again (unknown or failed).

        An item an earlier answer settled is answered again (from the key's record): it is
        counted once.
        """
        unsettled = {item.index for item in todo}
        again: list[_Item] = []
        for result in results:
            if result["index"] not in unsettled:
                continue
            item = batch[result["index"]]
            status = result.get("status")
            if status == "accepted":
                self.summary.accepted += 1
                continue
            reasons = [_error_reason(error) for error in result.get("errors") or ()] or [
                f"{status} without a reason"
            ]
            if status == "rejected":
                customer_id = result.get("customer_id") or item.row.customer.get("customer_id")
                self.summary.reject(item.row.number, reasons, customer_id)
                continue
            item.reasons = reasons
            item.maybe_taken |= status == "unknown"
            again.append(item)
        return again

    def _fail(self, items: Sequence[_Item], reason: str) -> None:
        """An answer that settles the items as not taken, unless an earlier attempt may have."""
        for item in items:
            item.reasons = [reason]
        self._give_up(items)

    def _give_up(self, items: Sequence[_Item]) -> None:
        for item in items:
            if item.maybe_taken:
                self.summary.unknown += 1
                self.summary.unknowns.update(item.reasons)
            else:
                self.summary.failed += 1
                self.summary.failures.update(item.reasons)


def _unanswered(items: Sequence[_Item], reason: str, *, maybe_taken: bool) -> None:
    """An attempt that got no per-item answer: why, and whether it may have been taken."""
    for item in items:
        item.maybe_taken |= maybe_taken
        item.reasons = [reason]


def _refusal(response: httpx.Response) -> str:
    """Why a 401 or 403 stopped the load, and the role loading needs."""
    if response.status_code == 401:
        return f"the gateway refused the request ({_http_reason(response)}): it needs a writer key"
    return f"the API key's role may not write ({_http_reason(response)}): it needs the writer role"


def _results(response: httpx.Response) -> list[dict[str, Any]] | None:
    """Per-item results of a batch answer (202, 422, 503, 504); None for any other answer."""
    if response.status_code not in (202, 422, 503, 504):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    results = body.get("results") if isinstance(body, dict) else None
    return results if isinstance(results, list) else None


def _retry_after(response: httpx.Response) -> float:
    """The wait a 429 or 503 asks for, in seconds (0 if none or unreadable)."""
    try:
        return max(float(response.headers.get("Retry-After", "0")), 0.0)
    except ValueError:
        return 0.0


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
