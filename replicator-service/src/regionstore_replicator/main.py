"""Applies customer commands to their replica regions."""

from __future__ import annotations

import asyncio

from regionstore_replicator.settings import ReplicatorSettings
from regionstore_shared.command_consumer import consume_commands
from regionstore_shared.runtime import ServiceState, run_service
from regionstore_shared.schemas import Applier


def main() -> None:
    """Run the replicator until SIGTERM."""
    settings = ReplicatorSettings()

    async def work(state: ServiceState) -> None:
        await consume_commands(
            settings, role=Applier.REPLICATOR, group_id=settings.kafka.replicator_group, state=state
        )

    asyncio.run(run_service(settings, work))
