"""The chaos load: writer clients that each own their customers, and the ledger of every answer.

A client sends one request at a time, so each of its customers' writes are acknowledged one
after another, and the last one acknowledged must be what every region holds, whatever the
versions say (the gateways' clocks may disagree: a client sends each request through the next
gateway it has). Every write carries an ``Idempotency-Key`` and a fresh ``customer_unique_id``.
An answer of unknown outcome (a 504, a dropped connection, a gateway that is not there) is
retried with the same key and body until it resolves; a 503 (or a 429, backpressure) that
says the write was not accepted, on the first attempt, is recorded as refused and not retried,
so the verification can prove that it was never applied.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import UF_CODES
from regionstore_testing.audit import Expected

RESOLVE_WITHIN_S = 240.0
RETRY_EVERY_S = 0.5
CITIES = ("sao paulo", "rio de janeiro", "belo horizonte", "curitiba", "salvador", "recife")
BATCH_SHARE = 0.3
BATCH_ITEMS = (10, 40)

Fields = dict[str, Any]


@dataclass
class Ledger:
    """What the clients were told, and so what the stores must hold."""

    prefix: str
    finals: dict[str, Expected] = field(default_factory=dict)
    acked_versions: dict[str, set[int]] = field(default_factory=dict)
    acked_commands: dict[str, set[str]] = field(default_factory=dict)
    acknowledged: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    resolved_after_unknown: int = 0
    unresolved: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """Every answer a client had, when (monotonic): accepted, refused or unknown."""

    def mark(self, outcome: str) -> None:
        """Note an answer on the timeline."""
        self.timeline.append((time.monotonic(), outcome))

    @property
    def total_acknowledged(self) -> int:
        """Writes the gateway acknowledged, of every kind."""
        return sum(self.acknowledged.values())

    def ack(
        self, kind: str, customer_id: str, answer: Mapping[str, Any], fields: Fields | None
    ) -> None:
        """Record an acknowledged write: the customer's new final state, which must win over
        every write of the customer acknowledged before it."""
        version, command_id = int(answer["version"]), str(answer["command_id"])
        held = self.finals.get(customer_id)
        earlier = frozenset() if held is None else held.earlier | {held.command_id or ""}
        self.finals[customer_id] = Expected(
            customer_id,
            version,
            deleted=fields is None,
            fields=fields,
            command_id=command_id,
            earlier=earlier - {"", command_id},
        )
        self.acked_versions.setdefault(customer_id, set()).add(version)
        self.acked_commands.setdefault(customer_id, set()).add(command_id)
        self.acknowledged[kind] += 1


@dataclass(frozen=True, slots=True)
class Write:
    """One write a client wants applied: an upsert with its fields, or a delete."""

    kind: str
    customer_id: str
    fields: Fields | None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def request(self) -> tuple[str, str, Fields | None]:
        """Method, path and body of the single request."""
        if self.fields is None:
            return "DELETE", f"/v1/customers/{self.customer_id}", None
        if self.kind == "create":
            return "POST", "/v1/customers", {"customer_id": self.customer_id, **self.fields}
        return "PUT", f"/v1/customers/{self.customer_id}", self.fields

    def item(self) -> Fields:
        """The batch item."""
        if self.fields is None:
            return {"op": "delete", "customer_id": self.customer_id, "idempotency_key": self.key}
        customer = {"customer_id": self.customer_id, **self.fields}
        return {"customer": customer, "idempotency_key": self.key}


class Client:
    """One writer client: its own customers, one request at a time, until told to stop."""

    def __init__(
        self,
        number: int,
        gateways: Sequence[httpx.AsyncClient],
        ledger: Ledger,
        regions: RegionMap,
    ) -> None:
        self._gateways = gateways
        self._sent = number
        self._ledger = ledger
        self._regions = regions
        self._rng = random.Random(f"{ledger.prefix}-{number}")
        self._id_prefix = f"{ledger.prefix}{number:02x}"
        self._live: dict[str, Fields] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set; the write in hand is always resolved first."""
        while not stop.is_set():
            if self._rng.random() < BATCH_SHARE:
                taken: set[str] = set()
                writes = [self._next(taken) for _ in range(self._rng.randint(*BATCH_ITEMS))]
                await self._batch(writes)
            else:
                await self._single(self._next(set()))

    def _next(self, taken: set[str]) -> Write:
        """The next write, of a customer not in ``taken`` (which it joins).

        A batch never holds one customer twice: its items are versioned in order, but an item
        retried after an unknown outcome could be acknowledged after a later one.
        """
        write = self._pick(set(self._live) - taken)
        taken.add(write.customer_id)
        return write

    def _pick(self, candidates: set[str]) -> Write:
        roll = self._rng.random()
        if not candidates or roll < 0.4:
            customer_id = f"{self._id_prefix}{uuid.uuid4().hex[: 32 - len(self._id_prefix)]}"
            fields = self._fields(None)
            self._live[customer_id] = fields
            return Write("create", customer_id, fields)
        customer_id = self._rng.choice(sorted(candidates))
        if roll < 0.85:
            fields = self._fields(self._live[customer_id])
            self._live[customer_id] = fields
            return Write("move", customer_id, fields)
        del self._live[customer_id]
        return Write("delete", customer_id, None)

    def _fields(self, current: Fields | None) -> Fields:
        """New fields; a customer that exists moves to another home region."""
        homes = list(self._regions.names)
        if current is not None:
            homes.remove(self._regions.home_of(int(current["customer_zip_code_prefix"])))
        spec = self._regions.spec(self._rng.choice(homes))
        return {
            "customer_unique_id": uuid.uuid4().hex,
            "customer_zip_code_prefix": self._rng.randint(spec.zip_min, spec.zip_max),
            "customer_city": self._rng.choice(CITIES),
            "customer_state": self._rng.choice(UF_CODES),
        }

    def _next_gateway(self) -> httpx.AsyncClient:
        """The gateway of the next request: each in turn."""
        self._sent += 1
        return self._gateways[self._sent % len(self._gateways)]

    def _resolved(self, write: Write, answer: Mapping[str, Any]) -> None:
        self._ledger.mark("accepted")
        self._ledger.ack(write.kind, write.customer_id, answer, write.fields)

    def _refused(self, write: Write) -> None:
        self._ledger.mark("refused")
        self._ledger.refused[write.kind] += 1
        self._forget(write)

    def _unresolved(self, write: Write, why: str) -> None:
        self._ledger.unresolved.add(write.customer_id)
        self._ledger.errors.append(f"{write.customer_id}: {write.kind} unresolved: {why}")
        self._forget(write)

    def _forget(self, write: Write) -> None:
        """A write not taken leaves the customer as the last acknowledged write did."""
        final = self._ledger.finals.get(write.customer_id)
        if final is None or final.deleted or final.fields is None:
            self._live.pop(write.customer_id, None)
        else:
            self._live[write.customer_id] = dict(final.fields)

    async def _single(self, write: Write) -> None:
        method, path, body = write.request()
        headers = {"Idempotency-Key": write.key}
        deadline = time.monotonic() + RESOLVE_WITHIN_S
        first = True
        while True:
            try:
                response = await self._next_gateway().request(
                    method, path, json=body, headers=headers
                )
            except httpx.TransportError as error:
                why = f"{type(error).__name__}"
            else:
                answer: dict[str, Any] = response.json() if response.content else {}
                if response.status_code == 202:
                    self._ledger.resolved_after_unknown += not first
                    self._resolved(write, answer)
                    return
                # 503, or 429 while the consumers are too far behind: certainly not taken.
                if response.status_code in (429, 503) and answer.get("outcome") == "not_accepted":
                    if first:
                        self._refused(write)
                        # As a client should: the next write waits as long as it was told.
                        await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
                        return
                elif response.status_code < 500:
                    self._ledger.errors.append(f"{method} {path}: {response.status_code} {answer}")
                    self._forget(write)
                    return
                why = f"{response.status_code} {answer.get('outcome')}"
            self._ledger.mark("unknown")
            if time.monotonic() > deadline:
                self._unresolved(write, why)
                return
            first = False
            await asyncio.sleep(RETRY_EVERY_S)

    async def _batch(self, writes: list[Write]) -> None:
        deadline = time.monotonic() + RESOLVE_WITHIN_S
        tried: set[str] = set()
        while writes:
            try:
                response = await self._next_gateway().post(
                    "/v1/customers:batch", json={"items": [w.item() for w in writes]}
                )
                answer: dict[str, Any] = response.json()
                results: list[dict[str, Any]] = answer["results"]
            except (httpx.TransportError, ValueError, KeyError, TypeError):
                results = [{"status": "unknown"} for _ in writes]
            retry: list[Write] = []
            refused = False
            for write, result in zip(writes, results, strict=True):
                outcome = result["status"]
                if outcome == "accepted":
                    self._ledger.resolved_after_unknown += write.key in tried
                    self._resolved(write, result)
                elif outcome == "failed" and write.key not in tried:
                    self._refused(write)
                    refused = True
                elif outcome == "rejected":
                    self._ledger.errors.append(f"batch item {write.item()}: {result}")
                    self._forget(write)
                else:
                    self._ledger.mark("unknown")
                    retry.append(write)
            tried.update(w.key for w in retry)
            writes = retry
            if writes and time.monotonic() > deadline:
                for write in writes:
                    self._unresolved(write, "batch item never resolved")
                return
            if writes or refused:
                await asyncio.sleep(RETRY_EVERY_S)
