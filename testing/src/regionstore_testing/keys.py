"""Customers' data keys held in memory, for tests that seal and open commands without Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from regionstore_shared.personal import CustomerKey, KeyStore, opened
from regionstore_shared.schemas import Command, Customer, UpsertCustomer


class MemoryKeyring:
    """A :class:`~regionstore_shared.personal.KeyStore` in a dict."""

    def __init__(self) -> None:
        self.keys: dict[str, CustomerKey] = {}

    async def find(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        return {c: self.keys[c] for c in set(customer_ids) if c in self.keys}

    async def obtain(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        ids = set(customer_ids)
        for customer_id in ids:
            self.keys.setdefault(customer_id, CustomerKey.new())
        return await self.find(ids)

    async def destroy(self, customer_ids: Iterable[str]) -> int:
        return len(await self.take(customer_ids))

    async def take(self, customer_ids: Iterable[str]) -> dict[str, CustomerKey]:
        return {c: self.keys.pop(c) for c in set(customer_ids) if c in self.keys}

    async def restore(self, keys: Mapping[str, CustomerKey]) -> None:
        for customer_id, key in keys.items():
            self.keys.setdefault(customer_id, key)


async def customer_of(command: Command, keyring: KeyStore) -> Customer:
    """The customer a published upsert carries, opened with its key."""
    assert isinstance(command, UpsertCustomer)
    customer = opened(command, await keyring.find([command.key])).customer
    assert customer is not None
    return customer
