"""Settings of the writer service."""

from __future__ import annotations

from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings, HttpSettings


class WriterSettings(CommonSettings):
    """The shared sections and the writer's port (its consumer group is `kafka.writer_group`)."""

    service_name: str = "writer"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["WRITER_PORT"])
