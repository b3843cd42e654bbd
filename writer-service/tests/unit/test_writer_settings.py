"""The writer's settings: its name, port and consumer group, and how the environment sets them."""

from __future__ import annotations

from regionstore_writer.settings import WriterSettings
from shared.tests.service_checks import CommandConsumerSettingsChecks


class TestWriterSettings(CommandConsumerSettingsChecks):
    settings_class = WriterSettings
    name = "writer"
    port = 8101
    group_field = "writer_group"
