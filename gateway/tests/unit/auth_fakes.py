"""API keys for the gateway's unit tests: key records in memory and a key of each role."""

from __future__ import annotations

from regionstore_gateway.auth import Authenticator, Limits, Role
from regionstore_gateway.auth.apikeys import KeyHasher, KeyRecord, new_key

SECRET = "unit-tests-server-secret-0123456789abcdef"
HASHER = KeyHasher(SECRET)


class MemoryKeys:
    """Key records in a dict; ``down`` makes every read fail like an unreachable Redis."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.reads = 0
        self.error: Exception | None = None

    async def get(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.records.get(key_id)

    def issue(self, role: Role, *, rate: float | None = None, burst: int | None = None) -> str:
        key, parsed = new_key()
        self.records[parsed.key_id] = KeyRecord(
            key_id=parsed.key_id,
            role=role,
            digest=HASHER.digest(parsed.secret),
            name="unit tests",
            created_at="2026-11-28T00:00:00+00:00",
            rate=rate,
            burst=burst,
        )
        return key


KEYS = MemoryKeys()
OPERATOR_KEY = KEYS.issue(Role.OPERATOR)
#: The Authorization header of the operator key every gateway test calls with.
HEADERS = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def authenticator(keys: MemoryKeys = KEYS) -> Authenticator:
    """A fresh authenticator (empty cache, fresh rate limits) over ``keys``."""
    return Authenticator(keys, HASHER, defaults=Limits(rate=1000.0, burst=2000))
