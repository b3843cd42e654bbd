"""The hand-over bench's readings of a metrics page and a service's log."""

from __future__ import annotations

import json
import math

from regionstore_bench.handover import entries, loaded_after, rss_mb

PAGE = """# HELP process_resident_memory_bytes Resident memory size in bytes.
process_resident_memory_bytes 1.14e+08
regionstore_placement_entries{group="regionstore.writer",partition="0"} 1000.0
regionstore_placement_entries{group="regionstore.writer",partition="1"} 2500.0
"""


def _line(ts: str, message: str, seconds: float) -> str:
    return json.dumps({"ts": ts, "message": message, "seconds": seconds})


def test_a_page_gives_its_memory_and_its_table_entries() -> None:
    assert rss_mb(PAGE) == 114.0
    assert entries(PAGE) == 3500
    assert math.isnan(rss_mb(""))
    assert entries("") == 0


def test_the_first_load_logged_after_the_kill_is_the_one() -> None:
    lines = [
        _line("2026-12-06T18:19:07.540Z", "placement tables loaded", 1.1),
        _line("2026-12-06T18:19:08.000Z", "placement tables caught up", 0.5),
        "not json, placement tables loaded",
        _line("2026-12-06T18:19:09.250Z", "placement tables loaded", 2.5),
    ]
    killed = 1796581148.0  # 2026-12-06T18:19:08Z
    assert loaded_after(lines, killed) == (1796581149.25, 2.5)
    assert loaded_after(lines, killed + 5) is None
