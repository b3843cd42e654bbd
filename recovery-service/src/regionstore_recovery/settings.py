"""Settings of the recovery service."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from regionstore_recovery.pacing import PacingSettings
from regionstore_shared.ports import DEFAULT_PORTS
from regionstore_shared.settings import CommonSettings, HttpSettings


class DetectorSettings(BaseModel):
    """The failure detector (see regionstore_recovery.detector): when a region goes down and
    when it comes back."""

    enabled: bool = True
    probe_interval_s: Annotated[float, Field(gt=0)] = 1.0
    # A point read takes milliseconds; a store that needs a second is hung or overloaded.
    probe_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    # Down after this many failures (probes and the services' reports) within the window, the
    # latest probe among them.
    failures: Annotated[int, Field(ge=1)] = 3
    window_s: Annotated[float, Field(gt=0)] = 10.0
    # Back after this many healthy probes in a row, over at least this long; also the least
    # time between two changes of one region.
    healthy_probes: Annotated[int, Field(ge=1)] = 5
    healthy_for_s: Annotated[float, Field(ge=0)] = 5.0
    lease_key: str = "regionstore:detector:lease"
    lease_ttl_s: Annotated[float, Field(gt=0)] = 5.0


class RepairSettings(BaseModel):
    """The anti-entropy repair in the background (see regionstore_recovery.repair)."""

    enabled: bool = True
    # Seconds between the end of one pass and the start of the next.
    interval_s: Annotated[float, Field(gt=0)] = 300.0
    # The pace: customer copies read per second, over every region. At 2,000 a pass over
    # 100,000 customers (each held by two regions, 200,000 copies) takes under two minutes;
    # the cost is in docs/repair.md.
    copies_per_s: Annotated[float, Field(gt=0)] = 2000.0
    page: Annotated[int, Field(ge=10, le=10000)] = 1000
    # Live copies of consecutive differing buckets read as one range of ids per region (the
    # regions at once): a wiped region is read in a few hundred ranges, not one per bucket.
    window: Annotated[int, Field(ge=1)] = 20000
    # Characters of the customer id that make its bucket: 3 hex characters, 4,096 buckets.
    bucket_prefix: Annotated[int, Field(ge=1, le=8)] = 3
    # Customers written this recently are left for the next pass (their writes may still be
    # on their way to a region).
    grace_s: Annotated[float, Field(ge=0)] = 60.0
    # Diverging copies repaired together: one audit event and one publishing round each.
    batch: Annotated[int, Field(ge=1)] = 5000
    # A pass waits while the writer's or the replicator's lag is above this (and while any
    # region has parked commands): their customers would read as missing.
    max_lag: Annotated[int, Field(ge=0)] = 1000
    lease_key: str = "regionstore:repair:lease"
    # Renewed after every bucket; a pass that stalls longer loses the lease to another process.
    lease_ttl_s: Annotated[float, Field(gt=0)] = 60.0


class RecoverySettings(CommonSettings):
    """The shared sections plus how often statuses are re-read, how drains back off and how
    they pace themselves."""

    service_name: str = "recovery"
    http: HttpSettings = HttpSettings(port=DEFAULT_PORTS["RECOVERY_PORT"])
    resync_interval_s: Annotated[float, Field(gt=0)] = 10.0
    retry_min_s: Annotated[float, Field(gt=0)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0)] = 10.0
    detector: DetectorSettings = DetectorSettings()
    repair: RepairSettings = RepairSettings()
    pacing: PacingSettings = PacingSettings()
