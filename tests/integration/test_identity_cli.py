"""The users/groups/keys/usage/quotas/audit CLI, in-process (typer's runner) on a fresh data dir:
no models are loaded, so this stays fast."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from appliance.cli import app


@pytest.fixture()
def cli(tmp_path: Path) -> Any:
    runner = CliRunner()
    # The egress guard is process-wide and permanent; keep it out of the test process.
    env = {"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_EGRESS__BLOCK": "false"}

    def run(*args: str, ok: bool = True, stdin: str | None = None) -> Any:
        result = runner.invoke(app, list(args), env=env, input=stdin)
        if ok:
            assert result.exit_code == 0, f"{args}: {result.output}"
        return result

    run.data_dir = tmp_path / "data"  # type: ignore[attr-defined]
    return run


def test_users_groups_keys_round_trip(cli: Any) -> None:
    cli("groups", "add", "company")
    cli("groups", "add", "finance", "--parent", "company")
    user = json.loads(
        cli(
            "users",
            "add",
            "bob",
            "--group",
            "finance",
            "--role",
            "curator",
            "--password-stdin",
            "--json",
            stdin="s3cret-password\n",
        ).stdout
    )
    assert user["all_groups"] == ["company", "finance"] and user["has_password"] and user["role"] == "curator"
    assert "already exists" in cli("users", "add", "bob", ok=False).output
    assert "no group" in cli("users", "add", "eve", "--group", "nope", ok=False).output
    assert "cycle" in cli("groups", "add-member", "finance", "company", "--group", ok=False).output

    issued = json.loads(
        cli("keys", "create", "--user", "bob", "--collection", "fin", "--expires-days", "7", "--json").stdout
    )
    assert (
        issued["key"].startswith("kb-") and issued["collections"] == ["fin"] and issued["role"] == "curator"
    )
    assert "cannot carry" in cli("keys", "create", "--user", "bob", "--role", "admin", ok=False).output
    # A key for a name that is not a user yet creates that user (an admin command; audited).
    ghost = json.loads(cli("keys", "create", "--user", "ghost", "--role", "app", "--json").stdout)
    assert ghost["role"] == "app" and ghost["user"] == "ghost"
    cli("keys", "revoke", str(ghost["id"]))
    listed = json.loads(cli("keys", "list", "--user", "bob", "--json").stdout)
    assert [k["id"] for k in listed] == [issued["id"]] and issued["key"] not in json.dumps(listed)
    cli("keys", "revoke", str(issued["id"]))
    assert json.loads(cli("keys", "list", "--user", "bob", "--json").stdout)[0]["active"] is False

    disabled = json.loads(cli("users", "disable", "bob", "--json").stdout)
    assert disabled["disabled"] is True
    users = json.loads(cli("users", "list", "--json").stdout)
    assert [u["name"] for u in users] == ["bob", "ghost"]

    # Every change above is in the audit log, which verifies, and so does its export.
    verify = json.loads(cli("audit", "verify", "--json").stdout)
    assert verify["ok"] and verify["records"] >= 6
    actions = [
        json.loads(line)["action"]
        for line in (cli.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    for action in ("groups.add", "users.add", "keys.create", "keys.revoke", "users.disable"):
        assert action in actions
    out = cli.data_dir / "export.jsonl"
    cli("audit", "export", "--out", str(out))
    assert json.loads(cli("audit", "verify", "--file", str(out), "--json").stdout)["ok"]
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:-2]))
    bad = cli("audit", "verify", "--file", str(out), "--json", ok=False)
    assert bad.exit_code == 1 and json.loads(bad.stdout)["first_bad_line"] is not None


def test_usage_and_quotas(cli: Any) -> None:
    from appliance.container import Container
    from appliance.domain import Principal
    from appliance.settings import load_settings

    cli("quotas", "set", "group:finance", "--tokens-per-day", "1000", "--rpm", "10")
    assert json.loads(cli("quotas", "list", "--json").stdout)[0]["tokens_per_day"] == 1000
    assert "user:NAME or group:NAME" in cli("quotas", "set", "key:1", "--rpm", "1", ok=False).output
    container = Container(load_settings(data_dir=cli.data_dir))
    container.metering.record_usage(Principal("bob", "employee", ("finance",), key_id=3), 12, 3)
    rows = list(csv.DictReader(io.StringIO(cli("usage", "--csv").stdout)))
    assert {r["subject"]: r["total_tokens"] for r in rows} == {
        "user:bob": "15",
        "group:finance": "15",
        "key:3": "15",
    }
    only = json.loads(cli("usage", "--kind", "group", "--json").stdout)["data"]
    assert [r["subject"] for r in only] == ["group:finance"]


def test_ask_and_search_as_an_unknown_user_fail(cli: Any) -> None:
    for cmd in (("search", "anything", "--user", "ghost"), ("ask", "anything", "--user", "ghost")):
        result = cli(*cmd, ok=False)
        assert result.exit_code == 1 and "no user 'ghost'" in result.output
