"""The topic check's reading of the repair's commands, without Kafka."""

from __future__ import annotations

from regionstore_shared.domain import delete_command
from regionstore_shared.regions import RegionMap, RegionSpec
from regionstore_shared.schemas import encode_command
from tests.chaos.verify import TopicCheck, _note_repair

REGIONS = RegionMap([RegionSpec(name="solo", zip_min=0, zip_max=99999, replicas=())])


def test_a_repaired_write_counts_by_its_command_id_whatever_its_version() -> None:
    # Applied above the gateway's version (a gateway's clock behind another's), the repair
    # publishes it at the version applied: no gateway answered that version.
    command = delete_command("round-a", regions=REGIONS, version=99, issued_at_ms=1)
    check = TopicCheck()
    _note_repair(encode_command(command), "round-", {"round-a": {str(command.command_id)}}, check)
    assert (check.repaired, check.unacknowledged) == (1, 0)
    assert check.clean


def test_a_repaired_write_nobody_acknowledged_is_flagged() -> None:
    command = delete_command("round-a", regions=REGIONS, version=99, issued_at_ms=1)
    check = TopicCheck()
    _note_repair(encode_command(command), "round-", {"round-a": {"another-command"}}, check)
    assert (check.repaired, check.unacknowledged) == (1, 1)
    assert not check.clean
    assert "republished by the repair" in check.examples[0]


def test_another_rounds_commands_are_not_this_ones_concern() -> None:
    command = delete_command("other-a", regions=REGIONS, version=99, issued_at_ms=1)
    check = TopicCheck()
    _note_repair(encode_command(command), "round-", {}, check)
    assert (check.repaired, check.unacknowledged) == (0, 0)
