"""Backpressure for app fakes: one that never read a lag, so it refuses nothing."""

from __future__ import annotations

from regionstore_gateway.services.backpressure import Backpressure
from regionstore_gateway.settings import GatewaySettings


async def _nothing_read() -> dict[str, int | None]:
    return {}


def idle_backpressure(settings: GatewaySettings) -> Backpressure:
    """A Backpressure never started: every lag unknown, nothing refused."""
    return Backpressure(_nothing_read, settings.backpressure)
