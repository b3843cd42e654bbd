"""The client factories: what each Kafka consumer asks the broker for."""

from __future__ import annotations

from regionstore_shared.clients import kafka_consumer
from regionstore_shared.settings import KafkaSettings

SETTINGS = KafkaSettings(fetch_min_bytes=65536, fetch_max_wait_ms=150)


# Built, never started: no I/O. aiokafka keeps the options on the consumer until its fetcher
# starts, where these read them back.
class TestFetchGathering:
    async def test_a_gathering_consumer_waits_for_the_settings_bytes_or_time(self) -> None:
        consumer = kafka_consumer(SETTINGS, "topic", group_id="g", client_id="unit", gather=True)
        try:
            assert consumer._fetch_min_bytes == 65536
            assert consumer._fetch_max_wait_ms == 150
        finally:
            await consumer.stop()

    async def test_any_other_consumer_is_answered_as_soon_as_anything_comes(self) -> None:
        consumer = kafka_consumer(SETTINGS, "topic", group_id="g", client_id="unit")
        try:
            assert consumer._fetch_min_bytes == 1
            # Held while nothing comes: the wait then delays no record, and an idle consumer
            # asks every few seconds instead of twice a second.
            assert consumer._fetch_max_wait_ms == SETTINGS.held_fetch_ms > 500
        finally:
            await consumer.stop()

    async def test_a_consumer_that_gathers_one_byte_is_held_as_any_other(self) -> None:
        # Kafka's default minimum: the broker answers at the first record, so the settings'
        # wait (tuned for gathering) would only make an idle consumer ask more often.
        ungathered = KafkaSettings(fetch_max_wait_ms=150)
        consumer = kafka_consumer(ungathered, "topic", group_id="g", client_id="unit", gather=True)
        try:
            assert consumer._fetch_min_bytes == 1
            assert consumer._fetch_max_wait_ms == ungathered.held_fetch_ms
        finally:
            await consumer.stop()


def test_an_idle_poll_outlasts_a_gathering_fetch() -> None:
    # A poll shorter than the fetch's wait would find nothing between two fetches, and the
    # consumer would commit as if the topic were idle, once per fetch.
    for wait_ms in (0, 500, 5000):
        assert KafkaSettings(fetch_max_wait_ms=wait_ms).idle_poll_ms > wait_ms
