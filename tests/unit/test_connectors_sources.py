"""SOURCE strings, option handling and the egress decision for connectors (no servers needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import connectors
from appliance.domain import InvalidRequest
from appliance.ingestion.connect import ConnectorConfig, ConnectorFactory
from appliance.settings import Settings, load_settings
from connectors._net import address_problem

pytestmark = pytest.mark.usefixtures("clean_env")


def factory(settings: Settings | None = None) -> ConnectorFactory:
    settings = settings or load_settings()
    return ConnectorFactory(ConnectorConfig.from_settings(settings), settings.data_dir)


@pytest.mark.parametrize(
    ("spec", "kind", "options"),
    [
        ("/srv/docs", "filesystem", {"root": "/srv/docs"}),
        ("file:///srv/docs", "filesystem", {"root": "/srv/docs"}),
        ("https://intranet.example/wiki/", "web", {"start_urls": ["https://intranet.example/wiki/"]}),
        ("s3://bucket/some/prefix", "s3", {"bucket": "bucket", "prefix": "some/prefix"}),
        ("s3://bucket", "s3", {"bucket": "bucket", "prefix": ""}),
        (
            "git+https://git.example/team/handbook.git#dev",
            "git",
            {"repo": "https://git.example/team/handbook.git", "branch": "dev"},
        ),
        ("https://git.example/team/handbook.git", "git", {"repo": "https://git.example/team/handbook.git"}),
        ("git:/srv/repo#main", "git", {"repo": "/srv/repo", "branch": "main"}),
        ("git@git.example:team/handbook.git", "git", {"repo": "git@git.example:team/handbook.git"}),
        ("/srv/mirror.git", "git", {"repo": "/srv/mirror.git"}),
        ("ssh://git.example/repo", "git", {"repo": "ssh://git.example/repo"}),
        ("sqlite:///kb.db#articles", "sql", {"url": "sqlite:///kb.db", "table": "articles"}),
        (
            "postgres://u@db/kb#SELECT id, title, body FROM t",
            "sql",
            {"url": "postgresql://u@db/kb", "query": "SELECT id, title, body FROM t"},
        ),
        ("postgresql+psycopg://u@db/kb", "sql", {"url": "postgresql+psycopg://u@db/kb"}),
        ("sql+mysql://u@db/kb#pages", "sql", {"url": "mysql://u@db/kb", "table": "pages"}),
    ],
)
def test_source_strings(spec: str, kind: str, options: dict) -> None:
    assert connectors.parse_source(spec) == (kind, options)


def test_unknown_scheme_and_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="ftp://"):
        connectors.for_source("ftp://files.example/")
    with pytest.raises(InvalidRequest, match="no option colour"):
        connectors.build("filesystem", root=str(tmp_path), colour="blue")
    with pytest.raises(InvalidRequest, match="unknown source kind"):
        connectors.build("carrier-pigeon")
    # for_source drops options of other kinds, so callers may pass the union of settings.
    c = connectors.for_source(str(tmp_path), max_pages=3, extensions=[".md"])
    assert c.kind == "filesystem"


def test_string_option_values_are_converted() -> None:
    c = connectors.build(
        "web",
        start_urls="https://a.example/,https://b.example/",
        max_pages="7",
        timeout_s="2.5",
        sitemap="false",
        allow_private="10.0.0.0/8",
    )
    assert c.options()["max_pages"] == 7 and c.options()["timeout_s"] == 2.5
    assert c.options()["sitemap"] is False and c.options()["allow_private"] == ["10.0.0.0/8"]
    assert c.root == "https://a.example/ https://b.example/"
    assert c.options()["allowed_domains"] == ["a.example", "b.example"]
    with pytest.raises(InvalidRequest, match="bad option value"):
        connectors.build("web", start_urls="https://a.example/", max_pages="many")


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.100.100.200", "metadata"),
        ("100.64.0.1", "shared"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("93.184.216.34", None),
    ],
)
def test_address_classes(address: str, problem: str | None) -> None:
    found = address_problem(ipaddress.ip_address(address))
    assert (found is None) if problem is None else (problem in (found or ""))


def test_settings_flow_into_connector_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_CONNECTORS__WEB__MAX_PAGES", "5")
    monkeypatch.setenv("APPLIANCE_CONNECTORS__S3__SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    f = factory()
    assert f.defaults("web")["max_pages"] == 5
    assert f.defaults("s3")["secret_access_key"] == "s3cr3t"
    assert f.defaults("git")["cache_dir"] == str(tmp_path / "data" / "cache" / "git")
    assert f.defaults("upload")["upload_dir"] == str(tmp_path / "data" / "uploads")
    assert all(f.defaults(kind)["max_file_bytes"] == f.max_file_bytes for kind in connectors.REGISTRY)
    c = f.for_source("https://docs.example/", {"max_depth": "1"})
    assert c.options()["max_pages"] == 5 and c.options()["max_depth"] == 1
    s3 = f.for_source("s3://b/p")
    assert "s3cr3t" not in repr(s3.options())
    assert f.rebuild("s3", s3.options()).root == s3.root


def test_egress_is_widened_for_a_named_source_or_refused_with_the_setting_to_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import appliance.ingestion.connect as connect

    widened: list[list[str]] = []
    monkeypatch.setattr(connect, "guard_installed", lambda: True)
    monkeypatch.setattr(connect, "install_guard", lambda hosts: widened.append(list(hosts)))
    web = connectors.for_source("https://docs.example/")
    factory().allow_egress(web)
    assert widened == [["docs.example"]]
    factory().for_source("s3://b/p")  # the factory asks for every connector it builds
    assert widened[-1] == ["b.s3.us-east-1.amazonaws.com", "s3.us-east-1.amazonaws.com"]

    monkeypatch.setenv("APPLIANCE_CONNECTORS__ALLOW_SOURCE_HOSTS", "false")
    with pytest.raises(InvalidRequest, match="egress.allow"):
        factory().allow_egress(web)
    with pytest.raises(InvalidRequest, match="egress.allow"):
        factory().for_source("https://docs.example/")
    monkeypatch.setenv("APPLIANCE_EGRESS__ALLOW", '["docs.example"]')
    factory().allow_egress(web)  # already allowed: fine
    local = connectors.for_source("http://127.0.0.1:9/")
    factory().allow_egress(local)  # loopback never needs the allow-list
    assert len(widened) == 2


def test_local_paths_are_made_absolute_for_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert connectors.absolute_source("docs") == str(tmp_path / "docs")
    assert connectors.absolute_source("git:repo#dev") == f"git:{tmp_path / 'repo'}#dev"
    assert (
        connectors.absolute_source("sqlite:///kb.db#articles") == f"sqlite:///{tmp_path / 'kb.db'}#articles"
    )
    for unchanged in ("sqlite:////abs/kb.db#t", "https://a.example/", "s3://b/p", "git+https://h/r.git"):
        assert connectors.absolute_source(unchanged) == unchanged


def test_options_that_widen_reach_come_only_from_the_settings() -> None:
    from appliance.ingestion.connect import SETTINGS_ONLY

    for key in SETTINGS_ONLY:
        with pytest.raises(InvalidRequest, match="only be set in the settings"):
            factory().for_source("https://docs.example/", {key: "x"})
        with pytest.raises(InvalidRequest, match="only be set in the settings"):
            factory().for_kind("web", {"start_urls": ["https://docs.example/"], key: "x"})
    # Uploads are made by the upload API only: never a source a caller names by kind.
    with pytest.raises(InvalidRequest, match="documents API"):
        factory().for_kind("upload", {"uri": "upload://default/" + "0" * 32 + "/x.txt"})


def test_rebuild_takes_settings_only_options_from_the_current_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = connectors.build(
        "web", start_urls=["https://docs.example/"], allow_private=["10.0.0.0/8"]
    ).options()
    c = factory().rebuild("web", stored)
    assert c.options()["allow_private"] == [] and c.root == "https://docs.example/"
    monkeypatch.setenv("APPLIANCE_CONNECTORS__WEB__ALLOW_PRIVATE", '["intranet.example"]')
    assert factory().rebuild("web", stored).options()["allow_private"] == ["intranet.example"]
