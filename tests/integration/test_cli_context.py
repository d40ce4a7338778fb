"""The CLI's context object, in-process (typer's runner) on a fresh data dir: one container per
invocation, closed when the command ends, and the rules for commands run beside a server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from appliance.cli import app
from appliance.container import Container, write_server_info
from appliance.settings import load_settings


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    # The egress guard is process-wide and permanent; keep it out of the test process.
    return {"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_EGRESS__BLOCK": "false"}


@pytest.fixture()
def containers(monkeypatch: pytest.MonkeyPatch) -> list[Container]:
    """Every Container built while the test runs (real ones, only counted)."""
    built: list[Container] = []
    init = Container.__init__

    def counting_init(self: Container, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Container, "__init__", counting_init)
    return built


def test_one_container_per_invocation_released_at_the_end(
    env: dict[str, str], tmp_path: Path, containers: list[Container]
) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "where?", "doc": "a", "answer_any": ["x"]}) + "\n")
    # eval opens the data dir, then looks the user up: both on the same container.
    result = CliRunner().invoke(app, ["eval", str(qa), "--user", "nobody", "--json"], env=env)
    assert result.exit_code == 1 and "no user 'nobody'" in result.output
    assert len(containers) == 1
    # The failed command gave up the data dir when it ended, so another owner can take it.
    other = Container(load_settings(data_dir=tmp_path / "data"))
    try:
        other.acquire()
    finally:
        other.close()


def test_admin_commands_share_the_invocations_container(
    env: dict[str, str], containers: list[Container]
) -> None:
    # keys create for a new name creates the user, issues the key and audits both.
    result = CliRunner().invoke(app, ["keys", "create", "--user", "ghost", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert len(containers) == 1
    verify = CliRunner().invoke(app, ["audit", "verify", "--json"], env=env)
    assert json.loads(verify.stdout)["records"] == 2


def test_user_is_refused_beside_a_running_server(env: dict[str, str]) -> None:
    """A serve.json naming a live process (this one) stands for a running server: commands would
    go through its API, which acts as the administrator, so --user is an error before any call."""
    data = Path(env["APPLIANCE_DATA_DIR"])
    write_server_info(data, "http://127.0.0.1:9", "not-a-key")
    assert json.loads((data / "run" / "serve.json").read_text())["pid"] == os.getpid()
    for args in (["search", "x", "--user", "bob"], ["ask", "x", "--user", "bob"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1
        assert "--user is not supported while `appliance serve` owns the data dir" in result.output


def test_invalid_settings_exit_2_before_anything_runs(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("log_level: NOPE\n")
    for args in (["config", "show"], ["users", "list"], ["doctor"]):
        result = CliRunner().invoke(app, ["--config", str(bad), *args], env=env)
        assert result.exit_code == 2 and "invalid settings" in result.output, args
    assert not Path(env["APPLIANCE_DATA_DIR"]).exists()
