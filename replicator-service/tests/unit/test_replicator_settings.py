"""The replicator's settings: its name, port and group, and how the environment sets them."""

from __future__ import annotations

from regionstore_replicator.settings import ReplicatorSettings
from shared.tests.service_checks import CommandConsumerSettingsChecks


class TestReplicatorSettings(CommandConsumerSettingsChecks):
    settings_class = ReplicatorSettings
    name = "replicator"
    port = 8102
    group_field = "replicator_group"
