from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.settings import DEFAULTS_FILE, defaults_yaml, iter_setting_names, load_settings, redacted

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_are_safe() -> None:
    s = load_settings()
    assert s.server.host == "127.0.0.1"
    assert s.egress.block is True
    assert s.data_dir == Path(".appliance")


def test_layers_yaml_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 9000\ninference:\n  max_tokens: 99\n")
    s = load_settings(cfg)
    assert (s.server.port, s.inference.max_tokens, s.server.host) == (9000, 99, "127.0.0.1")
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "9100")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    s = load_settings()
    assert (s.server.port, s.inference.max_tokens, s.data_dir) == (9100, 99, tmp_path / "d")


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  prot: 9000\n")
    with pytest.raises(ValueError):
        load_settings(cfg)


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_AUTH__ADMIN_KEY", "kb-super-secret")
    s = load_settings()
    assert s.auth.admin_key.get_secret_value() == "kb-super-secret"
    assert "kb-super-secret" not in repr(redacted(s))


def test_packaged_defaults_file_matches_the_code() -> None:
    assert yaml.safe_load(DEFAULTS_FILE.read_text()) == yaml.safe_load(defaults_yaml())


def test_every_setting_is_documented_in_the_settings_page() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    missing = [name for name, _ in iter_setting_names() if f"`{name}`" not in page]
    assert not missing, f"settings missing from docs/settings.md: {missing}"
    assert all(description for _, description in iter_setting_names())


def test_moved_fusion_settings_are_still_read_under_their_old_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rag:\n  rrf_k: 42\nvectorstore:\n  prefetch: 12\n")
    s = load_settings(cfg)
    assert (s.retrieval.rrf_k, s.retrieval.prefetch, s.retrieval.dense_weight) == (42, 12, 1.0)
    assert "rrf_k" not in redacted(s)["rag"] and "prefetch" not in redacted(s)["vectorstore"]
    monkeypatch.setenv("APPLIANCE_RAG__RRF_K", "7")
    assert load_settings().retrieval.rrf_k == 7
