"""Crypto-shredding: each customer's fields travel encrypted with a key of that customer alone.

The gateway seals every upsert before it leaves the process (:func:`seal`), so the command
topic, the parked topics, the dead letters and the idempotency records hold ciphertext only.
The key lives apart, in Redis (:class:`Keyring`), one entry per customer. A delete destroys it
before its command is published: from then on every copy of every command of that customer, in
every topic and in every backup of one, is unreadable at once, whatever the topics' retention.

An applier opens a sealed upsert with the key (:class:`Keyring.find`, one round trip per batch);
an upsert whose key is gone was erased, and is applied as the tombstone it now stands for.

A write that races a delete of the same customer (sent before the delete was acknowledged) may
have been sealed with the key the delete destroys: it then ends as erased, as if it had been
ordered before the delete, which is one of the orders two concurrent writes may take. A write
sent after the delete's acknowledgement gets a new key (a new ``key_id``), so it stands.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis

from regionstore_shared.schemas import Command, Customer, Sealed, UpsertCustomer

KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """One customer's data key: ``key_id`` names it in commands, ``secret`` never leaves Redis
    and the processes that seal and open."""

    key_id: str
    secret: bytes = b""

    def __repr__(self) -> str:
        return f"CustomerKey(key_id={self.key_id!r})"

    @classmethod
    def new(cls) -> CustomerKey:
        """A fresh random key."""
        return cls(os.urandom(8).hex(), os.urandom(KEY_BYTES))

    def dumps(self) -> str:
        """How the key is stored in Redis."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"

    @classmethod
    def loads(cls, value: str | bytes) -> CustomerKey:
        """The key as stored by :meth:`dumps`."""
        if isinstance(value, bytes):
            value = value.decode()
        key_id, _, secret = value.partition(":")
        return cls(key_id, base64.b64decode(secret))


class ErasedError(Exception):
    """The customer's key is gone (or is another one): the sealed fields can never be read."""


def _aad(customer_id: str, key_id: str) -> bytes:
    return f"{customer_id}/{key_id}".encode()


def seal(customer: Customer, key: CustomerKey, command_id: uuid.UUID) -> Sealed:
    """``customer`` encrypted with ``key``; the customer id stays in clear (the Kafka key).

    The nonce comes from the command id: one command sealed twice (a batch item made again
    from its idempotency record) is the same bytes, and two commands never share a nonce.
    """
    nonce = hashlib.sha256(command_id.bytes).digest()[:NONCE_BYTES]
    data = AESGCM(key.secret).encrypt(
        nonce, customer.model_dump_json().encode(), _aad(customer.customer_id, key.key_id)
    )
    return Sealed(
        customer_id=customer.customer_id,
        key_id=key.key_id,
        nonce=base64.b64encode(nonce).decode(),
        data=base64.b64encode(data).decode(),
    )


def unseal(sealed: Sealed, key: CustomerKey | None) -> Customer:
    """The customer ``sealed`` holds; raises ErasedError when ``key`` is not its key."""
    if key is None or key.key_id != sealed.key_id:
        raise ErasedError(f"key {sealed.key_id} of the customer is destroyed")
    try:
        plain = AESGCM(key.secret).decrypt(
            base64.b64decode(sealed.nonce),
            base64.b64decode(sealed.data),
            _aad(sealed.customer_id, sealed.key_id),
        )
    except InvalidTag as error:
        raise ErasedError(f"key {sealed.key_id} does not open the customer") from error
    return Customer.model_validate_json(plain)


def sealed_upsert(command: UpsertCustomer, key: CustomerKey) -> UpsertCustomer:
    """The upsert with its customer sealed (kept opened in memory for the caller)."""
    if command.sealed is not None or command.customer is None:
        return command
    sealed = seal(command.customer, key, command.command_id)
    return command.model_copy(update={"sealed": sealed})


def opened(command: UpsertCustomer, keys: Mapping[str, CustomerKey]) -> UpsertCustomer:
    """The upsert with its customer at hand; raises ErasedError when its key is gone."""
    if command.customer is not None or command.sealed is None:
        return command
    customer = unseal(command.sealed, keys.get(command.key))
    return command.model_copy(update={"customer": customer})


class KeyStore(Protocol):
    """Where the customers' data keys are kept (:class:`Keyring`, or a fake in a test)."""

    async def find(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]: ...

    async def obtain(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]: ...

    async def destroy(self, customer_ids: Iterable[str]) -> int: ...

    async def take(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        """Erase the customers' keys; those that existed, to put back if need be."""
        ...

    async def restore(self, keys: Mapping[str, CustomerKey]) -> None:
        """Put keys taken back, each unless its customer has a new one meanwhile."""
        ...


class Keyring:
    """The customers' data keys, in Redis under ``prefix`` + customer id, one string each.

    Redis must not evict them (``noeviction``): a key lost that way erases its customer.
    """

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def name(self, customer_id: str) -> str:
        """The Redis key holding one customer's data key."""
        return self._prefix + customer_id

    async def find(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        """The keys that exist, by customer id (one round trip)."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        values = await self._redis.mget([self.name(c) for c in ids])
        return {c: CustomerKey.loads(v) for c, v in zip(ids, values, strict=True) if v}

    async def obtain(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        """Every customer's key, made where none exists yet (set only if absent, so two
        gateways making one at once agree on the first)."""
        ids = sorted(set(customer_ids))
        keys = await self.find(ids)
        missing = [c for c in ids if c not in keys]
        if not missing:
            return keys
        fresh = {c: CustomerKey.new() for c in missing}
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, key in fresh.items():
                pipe.set(self.name(customer_id), key.dumps(), nx=True)
            made = await pipe.execute()
        keys.update({c: fresh[c] for c, ok in zip(missing, made, strict=True) if ok})
        lost = [c for c, ok in zip(missing, made, strict=True) if not ok]
        keys.update(await self.find(lost))
        return keys

    async def destroy(self, customer_ids: Iterable[str]) -> int:
        """Erase the customers' keys; how many existed."""
        names = [self.name(c) for c in set(customer_ids)]
        return int(await self._redis.delete(*names)) if names else 0

    async def take(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        async with self._redis.pipeline(transaction=True) as pipe:
            for customer_id in ids:
                pipe.getdel(self.name(customer_id))
            values = await pipe.execute()
        return {c: CustomerKey.loads(v) for c, v in zip(ids, values, strict=True) if v}

    async def restore(self, keys: Mapping[str, CustomerKey]) -> None:
        if not keys:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for customer_id, key in keys.items():
                pipe.set(self.name(customer_id), key.dumps(), nx=True)
            await pipe.execute()


async def seal_all(
    commands: Sequence[Command],
    keyring: KeyStore,
    taken: dict[str, CustomerKey] | None = None,
) -> list[Command]:
    """The commands as they may leave the gateway: upserts sealed, and each delete's customer
    key destroyed before anything after it is sealed (a write after the delete gets a new key).

    The keys the deletes destroyed go into ``taken``, when given: a delete that Kafka then
    certainly did not take must give its key back (:meth:`KeyStore.restore`), or the writes
    acknowledged before it and not applied everywhere yet (parked ones) would read as erased.
    """
    out: list[Command] = []
    run: list[UpsertCustomer] = []

    async def flush() -> None:
        keys = await keyring.obtain(u.key for u in run if u.sealed is None)
        out.extend(sealed_upsert(u, keys[u.key]) if u.sealed is None else u for u in run)
        run.clear()

    for command in commands:
        if isinstance(command, UpsertCustomer):
            run.append(command)
            continue
        await flush()
        if taken is None:
            await keyring.destroy([command.key])
        else:
            taken.update(await keyring.take([command.key]))
        out.append(command)
    await flush()
    return out
