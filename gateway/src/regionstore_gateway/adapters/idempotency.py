"""Idempotency keys: one command per key, so a retried write is published as the same command.

A key maps, in Redis, to the hash of the request it was first used with (route and normalised
body), the command the gateway built for it (id, version, targets and all), whether Kafka has
acknowledged that command, and the answer then given. A retry is answered from the record: the
stored answer once acknowledged, else the stored command is produced again. Producing it twice is
safe because the apply ignores a version a region already holds.

Records live under a SHA-256 of the key, not the key itself: the gateway never needs the raw key
back, and the hash keeps Redis key names short and free of whatever characters clients choose.

A whole batch sent with one key (a bulk load) keeps one record for all its items, not one each:
the items' commands are made from the record again (:class:`BatchRecord`), so it holds a few
hundred bytes however many items the batch has.

Records are stored deflated against a preset dictionary of what every record spells out (field
names, targets, the answer's shape): a keyed write's record takes about 190 bytes instead of
860 (docs/redis-budget.md). Records written as plain JSON, before that,
are still read.

Records live in a Redis of their own, with a budget (``maxmemory``) that evicts the oldest
first once full. A key whose record was evicted, like one whose TTL ran out, is a new key: a
retry is published as a new command, with a new version.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Base64Bytes, BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared import schemas
from regionstore_shared.topics import partition_of

MAX_KEY_LENGTH = 200
HEADER = "Idempotency-Key"


def _printable_ascii(value: str) -> str:
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError("must contain only printable ASCII characters (space to '~')")
    return value


IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="1-200 printable ASCII characters, unique per intended write (a UUID, say). "
        "A retry with the same key and the same request is published as the same command "
        "(same command_id and version), or answered from the first answer once Kafka took it; "
        "the same key with a different request is a 422. Remembered for a day (configurable).",
        examples=["3f1c9a4e-6a7b-4b8e-9c51-2d2f0c6e7a10"],
    ),
    AfterValidator(_printable_ascii),
]


# Format 1 of a stored record: this byte, then the record's JSON deflated (raw, no header)
# against _DICTIONARY_V1. Never change either: records of a day ago must stay readable; a
# better dictionary is format 2. A value starting with "{" is a record stored as plain JSON.
_FORMAT_V1 = b"\x01"
_DICTIONARY_V1 = (
    b'{"request_hash":"","seed":"","first_version":,"issued_at_ms":,"acked":"///////////////'
    b'/////////////////////////////////////////////////////////"}{"request_hash":"","state":'
    b'"pending","command":{"schema_version":1,"command_id":"","version":,"issued_at_ms":,"ta'
    b'rgets":[{"region":"region_1","role":"home","action":"tombstone"},{"region":"region_2",'
    b'"role":"replica","action":"tombstone"},{"region":"region_3","role":"replica","action":'
    b'"tombstone"}],"republished":false,"position":null,"kind":"delete","customer_id":""},"a'
    b'nswer":null}{"request_hash":"","state":"acked","command":{"schema_version":1,"command_'
    b'id":"","version":,"issued_at_ms":,"targets":[{"region":"region_1","role":"home","actio'
    b'n":"upsert"},{"region":"region_3","role":"replica","action":"upsert"},{"region":"regio'
    b'n_2","role":"replica","action":"tombstone"}],"republished":false,"position":null,"kind'
    b'":"upsert","customer":{"customer_id":"","customer_unique_id":"","customer_zip_code_pre'
    b'fix":,"customer_city":"sao paulo","customer_state":"SP"},"home_region":"region_1"},"an'
    b'swer":{"status":"accepted","customer_id":"","command_id":"","version":,"region":"regio'
    b'n_1","errors":null}}{"command_id":"","version":,"customer_id":"","region":"region_1","'
    b'location":"/v1/customers/","applied":false}'
)
_WINDOW_BITS = -15  # raw deflate: no zlib header or checksum to store


def request_hash(route: str, **parts: object) -> str:
    """A digest of what a request asks for: the route and its normalised body."""
    canonical = json.dumps({"route": route, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class RecordState(StrEnum):
    """How far the command of a key got."""

    PENDING = "pending"
    """Claimed; Kafka's acknowledgement not (yet) seen, so the outcome may be unknown."""
    ACKED = "acked"
    """Kafka acknowledged the command; ``answer`` is what the client was told."""


class Record(BaseModel):
    """What the gateway remembers about one idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_hash: str
    state: RecordState
    command: schemas.Command = Field(description="The one command published for this key.")
    answer: dict[str, Any] | None = Field(
        default=None, description="The 202 body, once Kafka acknowledged the command."
    )

    def acked(self, answer: dict[str, Any]) -> Record:
        """The same record, acknowledged with the answer given."""
        return self.model_copy(update={"state": RecordState.ACKED, "answer": answer})


class BatchRecord(BaseModel):
    """What the gateway remembers about the key of a whole batch.

    Item ``i``'s command is made again from the same request with the command id
    ``uuid5(seed, str(i))``, the version ``first_version + i * VERSION_STEP`` (a run reserved
    from the clock) and ``issued_at_ms``: the same command, without keeping it. Two bitmaps say
    how far each item got: ``sent`` is set before its command is handed to Kafka and cleared if
    Kafka certainly did not take it, so a retry publishes a ``sent`` item again as republished
    and any other as a new command; ``acked`` once Kafka acknowledged it.

    ``reached`` keeps, per partition of the command topic, the offset the first attempt's
    gateway had seen the partition reach before anything of the batch was sent: every attempt
    stamps item ``i``'s command with its partition's as ``after``. An offset taken at a retry
    would be wrong: the first attempt may stand below it, before writes that must stay newer.
    One number per partition, not one per item: a bulk load's record stays as small.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_hash: str
    seed: uuid.UUID
    first_version: int = Field(ge=1)
    issued_at_ms: int = Field(ge=0)
    sent: Base64Bytes = Field(
        default=b"", description="Bit i set: item i's command may have reached Kafka."
    )
    acked: Base64Bytes = Field(
        default=b"", description="Bit i set: Kafka acknowledged item i's command."
    )
    reached: tuple[Annotated[int, Field(ge=0)], ...] = Field(
        default=(),
        description="Index p: an offset partition p had certainly reached when the batch was "
        "first made (0: none known); as many as the command topic has partitions. Empty when "
        "not known, and in records written before it was kept: the commands carry no after.",
    )

    def command_id(self, index: int) -> uuid.UUID:
        """The command id of item ``index``."""
        return uuid.uuid5(self.seed, str(index))

    def after(self, customer_id: str) -> int | None:
        """The ``after`` of every command of the batch for ``customer_id`` (see
        Command.after), or None when not known."""
        if not self.reached:
            return None
        return self.reached[partition_of(customer_id, len(self.reached))] or None

    def is_sent(self, index: int) -> bool:
        """Whether item ``index``'s command may have reached Kafka in an earlier attempt."""
        return _bit(self.sent, index)

    def is_acked(self, index: int) -> bool:
        """Whether item ``index``'s command was acknowledged by an earlier attempt."""
        return _bit(self.acked, index)

    def marked(
        self,
        *,
        sent: Iterable[int] = (),
        unsent: Iterable[int] = (),
        acked: Iterable[int] = (),
    ) -> BatchRecord:
        """The same record, with items' commands marked sent, certainly not sent, or acked."""
        sending = bytearray(self.sent)
        _set(sending, sent, on=True)
        _set(sending, unsent, on=False)
        acking = bytearray(self.acked)
        _set(acking, acked, on=True)
        return self.model_copy(update={"sent": bytes(sending), "acked": bytes(acking)})


def _bit(bits: bytes, index: int) -> bool:
    byte = index >> 3
    return byte < len(bits) and bool(bits[byte] & (1 << (index & 7)))


def _set(bits: bytearray, indices: Iterable[int], *, on: bool) -> None:
    for index in indices:
        byte = index >> 3
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits)))
        if on:
            bits[byte] |= 1 << (index & 7)
        else:
            bits[byte] &= ~(1 << (index & 7)) & 0xFF


AnyRecord = TypeVar("AnyRecord", Record, BatchRecord)


class IdempotencyUnavailableError(Exception):
    """Redis cannot be reached, so a keyed write cannot be made safe to retry."""


class KeyReusedError(Exception):
    """The key was first used with a different request."""


class IdempotencyStore:
    """Idempotency records in Redis, each expiring a fixed time after its key was first used.

    Every method takes many keys at once, so a batch costs a few round trips, not one per item.
    """

    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s

    def redis_key(self, key: str) -> str:
        """Where the record of an idempotency key is stored."""
        return self._prefix + hashlib.sha256(key.encode()).hexdigest()

    def batch_redis_key(self, key: str) -> str:
        """Where the record of a whole batch's key is stored: apart from the single writes'."""
        return f"{self._prefix}batch:{hashlib.sha256(key.encode()).hexdigest()}"

    async def find_batch(self, key: str) -> BatchRecord | None:
        """The record of a batch's key, or None for a key never used (or forgotten)."""
        try:
            value = await self._redis.get(self.batch_redis_key(key))
        except RedisError as error:
            raise IdempotencyUnavailableError(str(error)) from error
        return _parse_as(BatchRecord, value)

    async def claim_batch(self, key: str, record: BatchRecord) -> BatchRecord:
        """Store ``record`` unless the key is taken; the record the key holds either way."""
        name = self.batch_redis_key(key)
        for _ in range(3):
            try:
                if await self._redis.set(name, encode_record(record), nx=True, ex=self._ttl_s):
                    return record
                held = _parse_as(BatchRecord, await self._redis.get(name))
            except RedisError as error:
                raise IdempotencyUnavailableError(str(error)) from error
            if held is not None:
                return held
        raise IdempotencyUnavailableError("the batch's idempotency key kept expiring while claimed")

    async def acknowledge_batch(self, key: str, record: BatchRecord) -> None:
        """Overwrite a batch key's record, keeping its expiry (nothing if it is gone)."""
        try:
            await self._redis.set(
                self.batch_redis_key(key), encode_record(record), xx=True, keepttl=True
            )
        except RedisError as error:
            raise IdempotencyUnavailableError(str(error)) from error

    async def find(self, keys: Sequence[str]) -> list[Record | None]:
        """The record of each key, or None for a key never used (or expired)."""
        if not keys:
            return []
        try:
            values = await self._redis.mget([self.redis_key(k) for k in keys])
        except RedisError as error:
            raise IdempotencyUnavailableError(str(error)) from error
        return [_parse(value) for value in values]

    async def claim(self, claims: Sequence[tuple[str, Record]]) -> list[Record]:
        """Store each pending record unless its key is taken; return the record each key holds.

        A key another request claimed meanwhile keeps that request's record, and the caller
        must go on with it (its command, or its answer), never with its own.
        """
        held: dict[str, Record] = {}
        todo = list(claims)
        # A key can be taken by our SET NX's rival and expire before our GET; such a key is
        # claimed again rather than published without a record.
        for _ in range(3):
            if not todo:
                break
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, record in todo:
                        pipe.set(
                            self.redis_key(key), encode_record(record), nx=True, ex=self._ttl_s
                        )
                    stored = await pipe.execute()
            except RedisError as error:
                raise IdempotencyUnavailableError(str(error)) from error
            held.update((key, record) for (key, record), ok in zip(todo, stored, strict=True) if ok)
            lost = [(key, record) for (key, record), ok in zip(todo, stored, strict=True) if not ok]
            winners = await self.find([key for key, _ in lost])
            held.update(
                (key, w) for (key, _), w in zip(lost, winners, strict=True) if w is not None
            )
            todo = [
                (key, record) for (key, record), w in zip(lost, winners, strict=True) if w is None
            ]
        if todo:
            raise IdempotencyUnavailableError("idempotency keys kept expiring while claimed")
        return [held[key] for key, _ in claims]

    async def release(self, keys: Sequence[str]) -> None:
        """Forget keys whose new command Kafka never took, so a retry is a new write."""
        if not keys:
            return
        try:
            await self._redis.delete(*(self.redis_key(k) for k in keys))
        except RedisError as error:
            raise IdempotencyUnavailableError(str(error)) from error

    async def acknowledge(self, acks: Sequence[tuple[str, Record]]) -> None:
        """Overwrite each key's record with its acknowledged one, keeping the original expiry."""
        if not acks:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, record in acks:
                    pipe.set(self.redis_key(key), encode_record(record), xx=True, keepttl=True)
                await pipe.execute()
        except RedisError as error:
            raise IdempotencyUnavailableError(str(error)) from error


def check(record: Record, request: str) -> Record:
    """The record, if it was made for this request; else KeyReusedError."""
    if record.request_hash != request:
        raise KeyReusedError("the key was already used with a different request")
    return record


def encode_record(record: Record | BatchRecord) -> bytes:
    """A record as it is stored: deflated against the dictionary (format 1)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, _WINDOW_BITS, zdict=_DICTIONARY_V1)
    return _FORMAT_V1 + deflate.compress(record.model_dump_json().encode()) + deflate.flush()


def decode_record(kind: type[AnyRecord], value: str | bytes) -> AnyRecord:
    """A stored record of ``kind`` (format 1, or plain JSON); raises ValueError if unreadable."""
    raw = value.encode() if isinstance(value, str) else value
    if raw[:1] == _FORMAT_V1:
        inflate = zlib.decompressobj(_WINDOW_BITS, zdict=_DICTIONARY_V1)
        try:
            raw = inflate.decompress(raw[1:]) + inflate.flush()
        except zlib.error as error:
            raise ValueError(f"not a deflated record: {error}") from error
    return kind.model_validate_json(raw)


def _parse(value: str | bytes | None) -> Record | None:
    return _parse_as(Record, value)


def _parse_as(kind: type[AnyRecord], value: str | bytes | None) -> AnyRecord | None:
    if value is None:
        return None
    try:
        return decode_record(kind, value)
    except ValueError as error:
        # Unreadable records would otherwise make their key unusable for a day; refusing
        # is the only answer that cannot publish a second command for it.
        raise IdempotencyUnavailableError(f"unreadable idempotency record: {error}") from error
