"""The replica-set bootstrap script of deploy/compose.yaml, run under node with a fake mongosh.

No MongoDB server can be had on the build machines, so these tests pin the script's decisions
(initiate or not, wait, give up) against scripted server replies; `compose up` runs it for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "deploy" / "mongo" / "init-replica-set.js"
FAKE_MONGOSH = Path(__file__).with_name("fake_mongosh.js")

MEMBERS = ["mongo-r1a:27017", "mongo-r1b:27017", "mongo-r1c:27017"]
SECRETS = Path(tempfile.mkdtemp(prefix="init-replica-set-"))
ROOT_PASSWORD = "root-Pa55-from-a-secret"
APP_PASSWORD = "app-Pa55-from-a-secret"
(SECRETS / "root").write_text(f"{ROOT_PASSWORD}\n")
(SECRETS / "app").write_text(f"{APP_PASSWORD}\n")
ENV = {
    "RS_NAME": "region_1",
    "RS_MEMBERS": ",".join(MEMBERS),
    "RS_PRIMARY_TIMEOUT_MS": "30000",
    "ROOT_USERNAME": "root",
    "ROOT_PASSWORD_FILE": str(SECRETS / "root"),
    "APP_USERNAME": "regionstore",
    "APP_PASSWORD_FILE": str(SECRETS / "app"),
    "APP_DATABASE": "regionstore",
}
NOT_YET_INITIALIZED = {"throw": {"code": 94, "message": "no replset config has been received"}}
# What a set that is up answers to the steps after the bootstrap, unless a test says otherwise.
USABLE = {
    "hello": [{"ok": 1, "isWritablePrimary": True}],
    "usersInfo": [{"ok": 1, "users": []}],
    "createUser": [{"ok": 1}],
}


def status(*states: str, set_name: str = "region_1") -> dict[str, Any]:
    return {
        "ok": 1,
        "set": set_name,
        "members": [
            {"name": host, "stateStr": state} for host, state in zip(MEMBERS, states, strict=True)
        ],
    }


def run_script(replies: dict[str, list[dict[str, Any]]], env: dict[str, str] = ENV) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is required to test deploy/mongo/init-replica-set.js (apt-get install nodejs)"
        )
    scenario = json.dumps({"env": env, "replies": {**USABLE, **replies}})
    result = subprocess.run(
        [node, str(FAKE_MONGOSH), str(SCRIPT), scenario],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def command_names(outcome: Any) -> list[str]:
    return [next(iter(command)) for command in outcome["commands"]]


class TestFreshMembers:
    def test_initiates_with_every_member_and_the_first_preferred(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [
                    NOT_YET_INITIALIZED,
                    status("PRIMARY", "SECONDARY", "SECONDARY"),
                ],
                "replSetInitiate": [{"ok": 1}],
            }
        )

        assert outcome["exitCode"] == 0, outcome
        initiate = next(c for c in outcome["commands"] if "replSetInitiate" in c)
        config = initiate["replSetInitiate"]
        assert config["_id"] == "region_1"
        assert [m["host"] for m in config["members"]] == MEMBERS
        assert [m["_id"] for m in config["members"]] == [0, 1, 2]
        assert [m["priority"] for m in config["members"]] == [2, 1, 1]

    def test_waits_for_a_primary_and_a_healthy_majority(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [
                    NOT_YET_INITIALIZED,
                    status("STARTUP2", "STARTUP", "STARTUP"),
                    status("PRIMARY", "STARTUP2", "STARTUP2"),
                    status("PRIMARY", "SECONDARY", "STARTUP2"),
                ],
                "replSetInitiate": [{"ok": 1}],
            }
        )

        assert outcome["exitCode"] == 0, outcome
        assert command_names(outcome).count("replSetGetStatus") == 4
        assert outcome["clockMs"] == 2000

    def test_a_concurrent_initiate_counts_as_done(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [
                    NOT_YET_INITIALIZED,
                    status("PRIMARY", "SECONDARY", "SECONDARY"),
                ],
                "replSetInitiate": [{"throw": {"code": 23, "message": "already initialized"}}],
            }
        )

        assert outcome["exitCode"] == 0, outcome

    def test_handles_a_shell_that_returns_failed_commands(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [
                    {"ok": 0, "code": 94, "errmsg": "no replset config has been received"},
                    status("PRIMARY", "SECONDARY", "SECONDARY"),
                ],
                "replSetInitiate": [{"ok": 1}],
            }
        )

        assert outcome["exitCode"] == 0, outcome
        assert "replSetInitiate" in command_names(outcome)


class TestInitiatedSet:
    def test_leaves_an_initiated_set_alone(self) -> None:
        outcome = run_script({"replSetGetStatus": [status("PRIMARY", "SECONDARY", "SECONDARY")]})

        assert outcome["exitCode"] == 0, outcome
        assert "replSetInitiate" not in command_names(outcome)

    def test_refuses_a_member_of_another_set(self) -> None:
        outcome = run_script(
            {"replSetGetStatus": [status("PRIMARY", "SECONDARY", "SECONDARY", set_name="region_2")]}
        )

        assert outcome["exitCode"] == 1, outcome
        assert "replSetInitiate" not in command_names(outcome)


class TestFailures:
    def test_gives_up_when_no_primary_appears_in_time(self) -> None:
        outcome = run_script(
            {"replSetGetStatus": [status("SECONDARY", "SECONDARY", "RECOVERING")]},
            env={**ENV, "RS_PRIMARY_TIMEOUT_MS": "5000"},
        )

        assert outcome["exitCode"] == 1, outcome
        assert 5000 <= outcome["clockMs"] <= 6000

    def test_a_primary_without_a_majority_is_not_enough(self) -> None:
        outcome = run_script(
            {"replSetGetStatus": [status("PRIMARY", "DOWN", "(not reachable/healthy)")]},
            env={**ENV, "RS_PRIMARY_TIMEOUT_MS": "3000"},
        )

        assert outcome["exitCode"] == 1, outcome

    def test_an_unexpected_server_error_fails_the_run(self) -> None:
        outcome = run_script(
            {"replSetGetStatus": [{"throw": {"code": 13, "message": "not authorized"}}]}
        )

        assert outcome["exitCode"] == 1, outcome
        assert outcome["error"] == "not authorized"
        assert "replSetInitiate" not in command_names(outcome)

    @pytest.mark.parametrize(
        "missing",
        [
            "RS_NAME",
            "RS_MEMBERS",
            "ROOT_USERNAME",
            "ROOT_PASSWORD_FILE",
            "APP_USERNAME",
            "APP_PASSWORD_FILE",
            "APP_DATABASE",
        ],
    )
    def test_requires_its_settings(self, missing: str) -> None:
        env = {key: value for key, value in ENV.items() if key != missing}

        outcome = run_script({}, env=env)

        assert outcome["exitCode"] == 1, outcome
        assert outcome["commands"] == []


class TestLogins:
    def test_logs_in_as_root_before_any_command(self) -> None:
        outcome = run_script({"replSetGetStatus": [status("PRIMARY", "SECONDARY", "SECONDARY")]})

        assert outcome["exitCode"] == 0, outcome
        first = outcome["commands"][0]
        assert first == {"auth": "root", "db": "admin", "pwdLength": len(ROOT_PASSWORD)}

    def test_creates_the_service_user_with_readwrite_on_its_database_only(self) -> None:
        outcome = run_script({"replSetGetStatus": [status("PRIMARY", "SECONDARY", "SECONDARY")]})

        assert outcome["exitCode"] == 0, outcome
        (created,) = [c for c in outcome["commands"] if "createUser" in c]
        assert created == {
            "createUser": "regionstore",
            "pwd": APP_PASSWORD,
            "roles": [{"role": "readWrite", "db": "regionstore"}],
        }

    def test_an_existing_service_user_gets_the_current_password(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [status("PRIMARY", "SECONDARY", "SECONDARY")],
                "usersInfo": [{"ok": 1, "users": [{"user": "regionstore"}]}],
                "updateUser": [{"ok": 1}],
            }
        )

        assert outcome["exitCode"] == 0, outcome
        assert "createUser" not in command_names(outcome)
        (updated,) = [c for c in outcome["commands"] if "updateUser" in c]
        assert updated["pwd"] == APP_PASSWORD

    def test_writes_the_user_only_once_this_member_is_primary(self) -> None:
        outcome = run_script(
            {
                "replSetGetStatus": [status("SECONDARY", "PRIMARY", "SECONDARY")],
                "hello": [
                    {"ok": 1, "isWritablePrimary": False},
                    {"ok": 1, "isWritablePrimary": True},
                ],
            }
        )

        assert outcome["exitCode"] == 0, outcome
        names = command_names(outcome)
        assert names.index("createUser") > max(i for i, n in enumerate(names) if n == "hello")
        assert outcome["clockMs"] == 1000

    def test_a_wrong_root_password_fails_the_run(self) -> None:
        outcome = run_script(
            {"auth": [{"throw": {"code": 18, "message": "Authentication failed."}}]}
        )

        assert outcome["exitCode"] == 1, outcome
        assert outcome["error"] == "Authentication failed."
        assert [c for c in outcome["commands"] if "auth" not in c] == []

    def test_an_empty_secret_is_refused(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty"
        empty.write_text("\n")

        outcome = run_script({}, env={**ENV, "APP_PASSWORD_FILE": str(empty)})

        assert outcome["exitCode"] == 1, outcome
        assert outcome["commands"] == []
