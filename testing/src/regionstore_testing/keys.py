"""Customers' data keys held in memory, for tests that seal and open commands without Kafka."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from regionstore_shared.personal import CustomerKey, KeyName, KeyStore, key_name, opened
from regionstore_shared.schemas import Command, Customer, UpsertCustomer


class MemoryKeyring:
    """A :class:`~regionstore_shared.personal.KeyStore` in a dict: each customer's keys with
    their ``since``, oldest first."""

    def __init__(self) -> None:
        self.keys: dict[str, list[tuple[CustomerKey, int]]] = {}
        self.refuse: BaseException | None = None
        """Raised by the next obtain or destroy, as Kafka refusing the key topic would."""

    async def find(self, names: Iterable[KeyName]) -> dict[KeyName, CustomerKey]:
        found = {}
        for customer_id, key_id in set(names):
            for key, _ in self.keys.get(customer_id, []):
                if key.key_id == key_id:
                    found[customer_id, key_id] = key
        return found

    async def obtain(
        self, first: Mapping[str, int], *, newer_than: Mapping[str, int]
    ) -> dict[str, CustomerKey]:
        self._refused()
        out = {}
        for customer_id, version in first.items():
            floor = newer_than.get(customer_id)
            held = self.keys.setdefault(customer_id, [])
            usable = [k for k, since in held if floor is None or since > floor]
            if not usable:
                usable = [CustomerKey.new()]
                held.append((usable[0], version))
            out[customer_id] = usable[-1]
        return out

    async def destroy(self, before: Mapping[str, int]) -> int:
        self._refused()
        count = 0
        for customer_id, version in before.items():
            held = self.keys.get(customer_id, [])
            kept = [(k, since) for k, since in held if since >= version]
            count += len(held) - len(kept)
            self.keys[customer_id] = kept
        return count

    def current(self, customer_id: str) -> CustomerKey | None:
        """The key the customer's next write would be sealed with, if any."""
        held = self.keys.get(customer_id, [])
        return held[-1][0] if held else None

    def _refused(self) -> None:
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error


async def customer_of(command: Command, keyring: KeyStore) -> Customer:
    """The customer a published upsert carries, opened with its key."""
    assert isinstance(command, UpsertCustomer)
    name = key_name(command)
    keys = await keyring.find([name]) if name is not None else {}
    customer = opened(command, keys).customer
    assert customer is not None
    return customer
