"""Crypto-shredding: each customer's fields travel encrypted with a key of that customer alone.

The gateway seals every upsert before it leaves the process (:func:`seal`), so the command
topic, the parked topics, the dead letters and the idempotency records hold ciphertext only.
The keys live apart, in a compacted Kafka topic of their own
(:mod:`regionstore_shared.personal_keys`). Once a delete is acknowledged, the gateway destroys
the keys its customer had before it: from then on every copy of every earlier command of that
customer, in every topic and in every backup of one, is unreadable, whatever the topics'
retention.

An applier opens a sealed upsert with its key (:meth:`KeyStore.find`, a local table); an
upsert whose key is gone was erased, and is applied as the tombstone it now stands for.

A write that overlaps a delete of the same customer (sent before the delete's 202 came back)
may have been sealed with a key the delete destroys: it then ends as erased, as if it had been
ordered before the delete, which is one of the orders two concurrent writes may take. A write
sent after the delete's 202 finds the key gone and makes a new one, so it stands.
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

from regionstore_shared.schemas import Command, Customer, Sealed, UpsertCustomer

KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """One customer's data key: ``key_id`` names it in commands, ``secret`` never leaves the
    key topic and the processes that seal and open."""

    key_id: str
    secret: bytes = b""

    def __repr__(self) -> str:
        return f"CustomerKey(key_id={self.key_id!r})"

    @classmethod
    def new(cls) -> CustomerKey:
        """A fresh random key."""
        return cls(os.urandom(8).hex(), os.urandom(KEY_BYTES))


KeyName = tuple[str, str]
"""A key as commands name it: the customer id and the key id."""


class ErasedError(Exception):
    """The customer's key is gone (or is another one): the sealed fields can never be read."""


class KeysUnreadableError(Exception):
    """Keys neither found nor known to be destroyed within the bound: the key topic could not
    be read to its end in time (a broker down, a partition's leader moving).

    Such a key may simply not have been seen yet, so an upsert that needs it must wait, as for
    a region that cannot be written, and never be taken as erased. ``found`` holds the keys
    that were found, ``unknown`` the names of the others.
    """

    def __init__(
        self, found: Mapping[KeyName, CustomerKey], unknown: Iterable[KeyName], reason: str
    ) -> None:
        self.found = dict(found)
        self.unknown = frozenset(unknown)
        super().__init__(f"{len(self.unknown)} key(s) not read in time: {reason}")


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


def key_name(command: UpsertCustomer) -> KeyName | None:
    """The key a sealed upsert needs; None for one in clear."""
    if command.sealed is None or command.customer is not None:
        return None
    return command.sealed.customer_id, command.sealed.key_id


def opened(command: UpsertCustomer, keys: Mapping[KeyName, CustomerKey]) -> UpsertCustomer:
    """The upsert with its customer at hand; raises ErasedError when its key is gone."""
    name = key_name(command)
    if name is None or command.sealed is None:
        return command
    customer = unseal(command.sealed, keys.get(name))
    return command.model_copy(update={"customer": customer})


class KeyStore(Protocol):
    """Where the customers' data keys are kept (:class:`~regionstore_shared.personal_keys.
    KafkaKeyring`, or a fake in a test)."""

    async def find(self, names: Iterable[KeyName]) -> dict[KeyName, CustomerKey]:
        """The keys that exist among ``names`` (a key written before this was called is seen):
        a name left out was destroyed. Raises :class:`KeysUnreadableError` when that cannot be
        told within a bound for some of them."""
        ...

    async def obtain(
        self, first: Mapping[str, int], *, newer_than: Mapping[str, int]
    ) -> dict[str, CustomerKey]:
        """A key for each customer of ``first`` (customer id: the version of the first command
        it will seal), durable before this returns: an existing one, unless it is as old as
        ``newer_than`` says a delete already in flight is, else a new one."""
        ...

    async def destroy(self, before: Mapping[str, int]) -> int:
        """Destroy, durably, every key of each customer made for a version before the one
        ``before`` gives (an acknowledged delete's); how many there were."""
        ...


async def seal_all(commands: Sequence[Command], keyring: KeyStore) -> list[Command]:
    """The commands as they may leave the gateway, upserts sealed.

    An upsert after a delete of its customer in the same sequence gets a key newer than the
    delete, which the delete's :meth:`KeyStore.destroy` (after its acknowledgement) spares.
    Nothing is destroyed here: a delete Kafka refuses changes nothing.
    """
    out: list[Command] = []
    run: list[UpsertCustomer] = []
    deleted: dict[str, int] = {}

    async def flush() -> None:
        first: dict[str, int] = {}
        for upsert in run:
            if upsert.sealed is None:
                first.setdefault(upsert.key, upsert.version)
        keys = await keyring.obtain(first, newer_than=dict(deleted)) if first else {}
        out.extend(sealed_upsert(u, keys[u.key]) if u.sealed is None else u for u in run)
        run.clear()

    for command in commands:
        if isinstance(command, UpsertCustomer):
            run.append(command)
            continue
        await flush()
        deleted[command.key] = command.version
        out.append(command)
    await flush()
    return out
