"""The key table: what the key topic says, on disk, with destroyed secrets gone from the file."""

from __future__ import annotations

from pathlib import Path

from regionstore_shared.personal import CustomerKey
from regionstore_shared.personal_keys import (
    KeyTable,
    parse_record,
    partition_of,
    record_key,
    record_value,
)

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
DAY_S = 86_400.0


def key_record(at: int, key: CustomerKey, since: int) -> tuple[int, bytes, bytes]:
    return at, record_key(CUSTOMER, key.key_id), record_value(key, since)


def tombstone(at: int, key: CustomerKey) -> tuple[int, bytes, None]:
    return at, record_key(CUSTOMER, key.key_id), None


class TestRecords:
    def test_a_record_round_trips_and_a_tombstone_says_destroyed(self) -> None:
        key = CustomerKey.new()
        name, held = parse_record(record_key(CUSTOMER, key.key_id), record_value(key, 42))
        assert (name, held) == ((CUSTOMER, key.key_id), (key, 42))
        assert parse_record(record_key(CUSTOMER, key.key_id), None) == (
            (CUSTOMER, key.key_id),
            None,
        )

    def test_a_customer_s_keys_share_the_command_partition(self) -> None:
        # Kafka's default partitioner on the command key: murmur2 of the customer id.
        assert partition_of(CUSTOMER, 6) == partition_of(CUSTOMER, 6)
        assert {partition_of(f"{n:032x}", 6) for n in range(200)} == set(range(6))


class TestKeyTable:
    def test_records_are_taken_in_order_and_a_tombstone_destroys(self, tmp_path: Path) -> None:
        old, new = CustomerKey.new(), CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(0, old, 5), key_record(1, new, 9), tombstone(2, old)])
        assert table.mark(0) == 3
        assert table.of(CUSTOMER) == [(new, 9)]
        assert table.find([(CUSTOMER, old.key_id), (CUSTOMER, new.key_id)]) == {
            (CUSTOMER, new.key_id): new
        }
        # Records already held are not taken again: a replay cannot bring a key back.
        table.take(0, [key_record(0, old, 5)])
        assert table.of(CUSTOMER) == [(new, 9)]
        table.close()

    def test_the_table_outlives_a_restart(self, tmp_path: Path) -> None:
        key = CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(3, [key_record(10, key, 5)])
        table.close()
        again = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        assert (again.mark(3), again.of(CUSTOMER)) == (11, [(key, 5)])
        again.close()

    def test_a_destroyed_secret_is_not_left_in_the_file(self, tmp_path: Path) -> None:
        keys = [CustomerKey.new() for _ in range(50)]
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(at, key, at) for at, key in enumerate(keys)])
        table.take(0, [tombstone(50 + at, key) for at, key in enumerate(keys)])
        table.close()
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert [k for k in keys if k.secret in on_disk] == []

    def test_a_table_not_followed_for_longer_than_tombstones_live_is_read_again(
        self, tmp_path: Path
    ) -> None:
        key = CustomerKey.new()
        table = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        table.take(0, [key_record(0, key, 5)])
        table.close()
        # The table notes when it last followed the topic; any time since is too long here.
        stale = KeyTable(tmp_path, name="t", stale_after_s=0.0)
        assert (stale.mark(0), stale.of(CUSTOMER)) == (0, [])
        stale.close()

    def test_own_keys_are_kept_and_dropped(self, tmp_path: Path) -> None:
        key = CustomerKey.new()
        table = KeyTable(None, name="t", stale_after_s=DAY_S)
        table.put(CUSTOMER, key, 7)
        assert table.of(CUSTOMER) == [(key, 7)]
        table.drop(CUSTOMER, [key.key_id])
        assert len(table) == 0
        table.close()

    def test_a_second_process_on_the_same_directory_keeps_a_table_of_its_own(
        self, tmp_path: Path
    ) -> None:
        key = CustomerKey.new()
        first = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        first.take(0, [key_record(0, key, 5)])
        second = KeyTable(tmp_path, name="t", stale_after_s=DAY_S)
        assert second.path.parent != tmp_path
        assert (second.mark(0), len(second)) == (0, 0)
        second.close()
        first.close()
