"""Settings of the recovery service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings, HttpSettings


class RecoverySettings(CommonSettings):
    """The shared sections plus how often statuses are re-read and how drains back off."""

    service_name: str = "recovery"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["RECOVERY_PORT"])
    resync_interval_s: Annotated[float, Field(gt=0)] = 10.0
    retry_min_s: Annotated[float, Field(gt=0)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0)] = 10.0
