"""Secrets at rest: the bootstrap admin key in a 0600 file, a private data dir and DB, source specs
holding passwords stored encrypted (Fernet, key in <data dir>/secrets) and masked where shown."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.container import Container
from appliance.db import make_engine, sources
from appliance.ingestion.sources import SourceStore
from appliance.security.auth import bootstrap_admin_to_file
from appliance.security.secrets import MASK, SecretBox, redact
from appliance.settings import load_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_keeps_the_admin_key_in_a_private_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    container = Container(load_settings(data_dir=data_dir))
    try:
        first = bootstrap_admin_to_file(container.keys, container.data_dir)
        assert first is not None
        issued, key_file = first
        assert key_file.parent == data_dir / "secrets"
        assert key_file.read_text().strip() == issued.key
        assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
        assert _mode(data_dir) == 0o700
        assert _mode(data_dir / "appliance.db") == 0o600
        assert container.keys.authenticate(issued.key) is not None
        # Later starts make no new key and leave the file alone.
        assert bootstrap_admin_to_file(container.keys, container.data_dir) is None
    finally:
        container.close()


def test_redaction_masks_passwords_in_urls_queries_and_options() -> None:
    assert (
        redact("postgresql://kb:hunter2@db.example/kb#docs") == f"postgresql://kb:{MASK}@db.example/kb#docs"
    )
    assert redact("https://x.example/a?page=2&token=abc") == f"https://x.example/a?page=2&token={MASK}"
    assert redact({"aws_secret_access_key": "s3cr3t", "bucket": "b", "url": "sql+mysql://u:p@h/d"}) == {
        "aws_secret_access_key": MASK,
        "bucket": "b",
        "url": f"sql+mysql://u:{MASK}@h/d",
    }
    assert redact("/srv/docs") == "/srv/docs" and redact(["s3://bucket/prefix"]) == ["s3://bucket/prefix"]


def test_source_specs_with_passwords_are_stored_encrypted_and_shown_masked(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "meta.db")
    box = SecretBox.for_data_dir(tmp_path)
    store = SourceStore(engine, box)
    spec = "postgresql://kb:hunter2@db.example/kb#docs"
    options = {"url": "postgresql://kb:hunter2@db.example/kb", "query": "select 1"}
    secret = store.add("sql", spec, options, "default", [], 0)
    plain = store.add("files", "/srv/docs", {"extensions": [".md"]}, "default", [], 0)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(sources))}
    assert "hunter2" not in repr(rows[secret.id]._mapping)
    assert rows[secret.id].spec.startswith("fernet:")
    assert rows[plain.id].spec == "/srv/docs"  # nothing secret: stays readable
    assert _mode(box.key_file) == 0o600
    # The store gives back what is needed to rebuild the connector ...
    again = store.get(secret.id)
    assert (again.spec, again.options) == (spec, options)
    # ... and shows it masked (API answers and a sync job's detail use as_dict).
    shown = again.as_dict()
    assert "hunter2" not in repr(shown) and shown["spec"] == f"postgresql://kb:{MASK}@db.example/kb#docs"
    # Another data dir's key cannot open it.
    other = SourceStore(engine, SecretBox.for_data_dir(tmp_path / "other"))
    with pytest.raises(ValueError, match="cannot decrypt"):
        other.get(secret.id)


def test_a_configured_key_is_shared_by_data_dirs_and_a_bad_one_fails_at_start(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    api, worker = (SecretBox.for_data_dir(tmp_path / name, key) for name in ("api", "worker"))
    sealed = api.seal("postgresql://reader:s3cret@db/x")
    assert worker.unseal(sealed) == "postgresql://reader:s3cret@db/x"
    assert not (tmp_path / "api" / "secrets").exists()  # nothing generated beside a configured key
    # Each data dir's own generated key: the worker cannot open what the API sealed.
    with pytest.raises(ValueError, match="same one"):
        SecretBox.for_data_dir(tmp_path / "w2").unseal(SecretBox.for_data_dir(tmp_path / "a2").seal("x"))
    with pytest.raises(ValueError, match="not a Fernet key"):
        SecretBox.for_data_dir(tmp_path, "not-a-key")
