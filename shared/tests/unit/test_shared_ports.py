"""The local stack's ports: one file of defaults, port variables winning where they are read."""

from __future__ import annotations

from regionstore_shared.ports import (
    DEFAULT_PORTS,
    default_store_uris,
    local_service_urls,
    port,
    read_ports,
    store_uris,
)
from regionstore_shared.settings import KafkaSettings, RedisSettings


def test_read_ports_skips_comments_and_blank_lines() -> None:
    assert read_ports("# ports\n\nKAFKA_PORT=9092\n REDIS_PORT = 6379 \n") == {
        "KAFKA_PORT": 9092,
        "REDIS_PORT": 6379,
    }


def test_a_set_variable_wins_over_the_default() -> None:
    assert port("KAFKA_PORT", {"KAFKA_PORT": "19092"}) == 19092
    assert port("KAFKA_PORT", {}) == DEFAULT_PORTS["KAFKA_PORT"]


def test_store_uris_follow_the_region_port_variables() -> None:
    uris = store_uris({"REGION_2_PORT": "27318"})
    assert uris["region_2"] == "mongodb://127.0.0.1:27318/?directConnection=true"
    assert uris["region_1"].startswith(f"mongodb://127.0.0.1:{DEFAULT_PORTS['REGION_1_PORT']}/")


def test_a_service_url_variable_wins_over_its_port() -> None:
    urls = local_service_urls({"REGIONSTORE_GATEWAY_URL": "http://gw:1", "WRITER_PORT": "8501"})
    assert urls["gateway"] == "http://gw:1"
    assert urls["writer"] == "http://127.0.0.1:8501"
    assert urls["recovery"] == f"http://127.0.0.1:{DEFAULT_PORTS['RECOVERY_PORT']}"


def test_the_settings_defaults_come_from_the_file() -> None:
    assert KafkaSettings().bootstrap_servers == f"127.0.0.1:{DEFAULT_PORTS['KAFKA_PORT']}"
    assert RedisSettings().url == f"redis://127.0.0.1:{DEFAULT_PORTS['REDIS_PORT']}/0"
    assert default_store_uris() == store_uris({})
