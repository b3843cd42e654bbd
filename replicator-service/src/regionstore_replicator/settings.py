"""Settings of the replicator service."""

from __future__ import annotations

from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings, HttpSettings


class ReplicatorSettings(CommonSettings):
    """The shared sections and the replicator's port; its group is `kafka.replicator_group`."""

    service_name: str = "replicator"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["REPLICATOR_PORT"])
