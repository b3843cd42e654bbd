"""Write traffic for the fault tests: batches through the gateway, one after another, each
reaching region_2 one way or another, every accepted item remembered for the audit."""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

from tests.regionstore_env import Env, customer

# New customers per batch: homed in region_2, replicated there (region_3's replica is region_2),
# and living elsewhere (region_2 gets their tombstone): every write reaches region_2 somehow.
homed = functools.partial(customer, zip_prefix=45000, state="BA", city="salvador")
replicated = functools.partial(customer, zip_prefix=75000, state="GO", city="goiania")
elsewhere = functools.partial(customer, zip_prefix=1310, state="SP", city="sao paulo")
PLACES = [
    {"customer_zip_code_prefix": 45000, "customer_state": "BA"},
    {"customer_zip_code_prefix": 75000, "customer_state": "GO"},
    {"customer_zip_code_prefix": 1310, "customer_state": "SP"},
]
FLOWING_WITHIN_S = 30


class Traffic:
    """Batches of writes through the gateway, one after another, until stopped.

    Each batch creates customers, updates some created before (one of them moves to another
    region) and deletes others; every accepted item is remembered as its customer's final
    state for the audit.
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self.batches = 0
        self._live: list[dict[str, Any]] = []
        self._progress = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        for round_ in itertools.count():
            if stop.is_set():
                return
            await self._send(self._items(round_))
            async with self._progress:
                self.batches += 1
                self._progress.notify_all()

    async def flowing(self, batches: int) -> None:
        """Wait until at least ``batches`` batches in all were accepted."""
        async with asyncio.timeout(FLOWING_WITHIN_S), self._progress:
            await self._progress.wait_for(lambda: self.batches >= batches)

    def _items(self, round_: int) -> list[dict[str, Any]]:
        created = (
            [homed() for _ in range(10)]
            + [replicated() for _ in range(5)]
            + [elsewhere() for _ in range(5)]
        )
        # The first update moves the customer to another region, the others rename its city.
        updated = [
            {
                **body,
                **(PLACES[round_ % len(PLACES)] if i == 0 else {}),
                "customer_city": f"c{round_}",
            }
            for i, body in enumerate(self._live[:3])
        ]
        deleted = self._live[3:5]
        self._live = self._live[5:] + updated + created
        return [{"customer": body} for body in created + updated] + [
            {"op": "delete", "customer_id": body["customer_id"]} for body in deleted
        ]

    async def _send(self, items: list[dict[str, Any]]) -> None:
        response = await self.env.http.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 202, response.text
        for item, result in zip(items, response.json()["results"], strict=True):
            assert result["status"] == "accepted", result
            self.env.remember(result, deleted=item.get("op") == "delete")
