"""API keys: their format, the server-side digest of their secret, and their records in Redis.

A key is ``rsk_<12 hex key id>_<secret>``, the secret 32 random bytes in unpadded URL-safe
base64. Redis keeps, per key id, the role and HMAC-SHA256(server secret, secret): never the
key, so a copy of Redis does not give anyone a key, and a copy of the server secret alone
does not either.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol, cast

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from regionstore_gateway.auth.roles import Principal, Role

KEY_PREFIX = "rsk_"
_KEY = re.compile(r"rsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A well-formed key, split into its public id and its secret."""

    key_id: str
    secret: str = field(repr=False)


def parse_key(key: str) -> ParsedKey | None:
    """The id and secret of a well-formed key, or None."""
    match = _KEY.fullmatch(key)
    return ParsedKey(match[1], match[2]) if match else None


def new_key() -> tuple[str, ParsedKey]:
    """A fresh random key and its parts."""
    parsed = ParsedKey(secrets.token_hex(6), secrets.token_urlsafe(32))
    return f"{KEY_PREFIX}{parsed.key_id}_{parsed.secret}", parsed


class KeyHasher:
    """Everything derived from the server secret: key digests and CSRF tokens."""

    def __init__(self, server_secret: str) -> None:
        self._secret = server_secret.encode()

    def digest(self, key_secret: str) -> str:
        """HMAC-SHA256 of a key's secret, hex: what Redis keeps instead of the key."""
        return hmac.digest(self._secret, key_secret.encode(), "sha256").hex()

    def matches(self, key_secret: str, digest: str) -> bool:
        """Whether a secret has this digest, in constant time."""
        return hmac.compare_digest(self.digest(key_secret), digest)

    def csrf_token(self, key_id: str) -> str:
        """The CSRF token of a console session signed in with this key.

        Bound to the key and unforgeable without the server secret; a page of another
        site can neither read it nor compute it. (The secret part of a key never contains
        ':', so this can never equal a key digest.)
        """
        return hmac.digest(self._secret, f"csrf:{key_id}".encode(), "sha256").hex()

    def csrf_ok(self, key_id: str, token: str) -> bool:
        """Whether a request's X-CSRF-Token is this key's."""
        return hmac.compare_digest(self.csrf_token(key_id), token)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the server keeps about one key."""

    key_id: str
    role: Role
    digest: str = field(repr=False)
    name: str = ""
    created_at: str = ""
    rate: float | None = None
    burst: int | None = None
    revoked_at: str | None = None

    @property
    def principal(self) -> Principal:
        """The principal requests with this key run as."""
        return Principal(self.key_id, self.role, self.name)

    def to_fields(self) -> dict[str, str]:
        """The record as a Redis hash (absent optional values are left out)."""
        fields = {
            "role": self.role.value,
            "digest": self.digest,
            "name": self.name,
            "created_at": self.created_at,
        }
        optional = {"rate": self.rate, "burst": self.burst, "revoked_at": self.revoked_at}
        fields.update({name: str(value) for name, value in optional.items() if value is not None})
        return fields

    @classmethod
    def from_fields(cls, key_id: str, fields: Mapping[str, str]) -> KeyRecord | None:
        """A record read back from Redis; None if the hash is empty or not a key record."""
        try:
            return cls(
                key_id=key_id,
                role=Role(fields["role"]),
                digest=fields["digest"],
                name=fields.get("name", ""),
                created_at=fields.get("created_at", ""),
                rate=float(fields["rate"]) if fields.get("rate") else None,
                burst=int(fields["burst"]) if fields.get("burst") else None,
                revoked_at=fields.get("revoked_at") or None,
            )
        except (KeyError, ValueError):
            return None


class KeyRecords(Protocol):
    """Where key records are looked up (Redis; a dict in unit tests)."""

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of a key id, or None; raises RedisError when the store fails."""
        ...


class RedisKeyStore:
    """Key records as Redis hashes, ``<prefix><key id>``."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}{key_id}"

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of a key id, or None."""
        # The gateway's client decodes answers (decode_responses=True): keys and values are str.
        fields = cast(dict[str, str], await self._redis.hgetall(self._key(key_id)))
        return KeyRecord.from_fields(key_id, fields) if fields else None

    async def put(self, record: KeyRecord) -> None:
        """Store a record, replacing any earlier one of the same id as a whole."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(record.key_id))
            fields: dict[FieldT, EncodableT] = dict(record.to_fields().items())
            pipe.hset(self._key(record.key_id), mapping=fields)
            await pipe.execute()

    async def all(self) -> list[KeyRecord]:
        """Every record, ordered by creation time."""
        records = []
        async for name in self._redis.scan_iter(match=f"{self._prefix}*", count=500):
            record = await self.get(name.removeprefix(self._prefix))
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked (kept, so it is never registered again); None if unknown."""
        record = await self.get(key_id)
        if record is None:
            return None
        if record.revoked_at is None:
            record = replace(record, revoked_at=now_iso())
            await self._redis.hset(self._key(key_id), "revoked_at", str(record.revoked_at))
        return record

    async def issue(
        self,
        hasher: KeyHasher,
        role: Role,
        *,
        name: str = "",
        rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """Create a key; the key itself is returned once and never stored."""
        while True:
            key, parsed = new_key()
            if not await self._redis.exists(self._key(parsed.key_id)):
                break
        record = KeyRecord(
            key_id=parsed.key_id,
            role=role,
            digest=hasher.digest(parsed.secret),
            name=name,
            created_at=now_iso(),
            rate=rate,
            burst=burst,
        )
        await self.put(record)
        return key, record


def now_iso() -> str:
    """The current time, UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
