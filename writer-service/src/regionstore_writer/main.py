"""Applies customer commands to their home region."""

from __future__ import annotations

import asyncio

from regionstore_shared.command_consumer import consume_commands
from regionstore_shared.runtime import ServiceState, run_service
from regionstore_shared.schemas import Applier
from regionstore_writer.settings import WriterSettings


def main() -> None:
    """Run the writer until SIGTERM."""
    settings = WriterSettings()

    async def work(state: ServiceState) -> None:
        await consume_commands(
            settings, role=Applier.WRITER, group_id=settings.kafka.writer_group, state=state
        )

    asyncio.run(run_service(settings, work))
