"""One conformance suite for every connector, built the way the appliance builds them.

Each kind runs against a real source: a folder, an upload in the data directory, a web site on
loopback, moto_server speaking S3 (marker ``services``), a git repository read in place and one
cloned from a ``file://`` URL, SQLite and a real PostgreSQL server (``services``). Every connector
comes from ``ConnectorFactory`` with settings, and must: list what its source holds; change an
item's version when its content changes and only then; drop deleted documents from the listing;
refuse a document over ``ingestion.max_file_mb`` with a reason naming that setting, while still
listing it; rebuild itself from ``options()`` (no secrets or settings-only options in them); say
which hosts and local paths it reaches; and close idempotently. Like
tests/integration/test_vectorstore_conformance.py does for the vector stores.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from appliance.domain import MAX_FILE_SETTING, ApplianceError, Connector, SourceItem
from appliance.ingestion.connect import SETTINGS_ONLY, ConnectorConfig, ConnectorFactory
from appliance.settings import load_settings
from tests.integration.connectors.conftest import S3, Postgres, Site, git, make_sqlite

pytestmark = pytest.mark.usefixtures("clean_env")

ALPHA = "The gearbox oil is changed every 18 months."
BETA = "Visitors sign in at the front desk."
# A limit of a few KiB, so that BIG is over it and ALPHA, BETA and a web index page are not.
LIMIT_MB = 0.002
BIG = "Overlong maintenance log. " * 200


class World:
    """A real source of one kind, with documents named by a short name (alpha, beta, big)."""

    kind = ""
    multi = True  # holds several documents (an upload holds exactly one)

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"

    def settings(self) -> dict[str, Any]:
        return {}

    def factory(self, max_file_mb: float | None = None) -> ConnectorFactory:
        settings = load_settings(
            data_dir=self.data_dir,
            log_level="WARNING",
            **({"ingestion": {"max_file_mb": max_file_mb}} if max_file_mb else {}),
            **self.settings(),
        )
        return ConnectorFactory(ConnectorConfig.from_settings(settings), settings.data_dir)

    def connector(self, max_file_mb: float | None = None) -> Connector:
        raise NotImplementedError

    def put(self, name: str, text: str) -> None:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def name_of(self, item: SourceItem) -> str | None:
        """The document's short name; None for an item that is not one of ours (a web index)."""
        return Path(item.uri).stem

    def hosts(self) -> list[str]:
        return []

    def local_paths(self) -> list[Path]:
        return []

    def close(self) -> None:
        pass


class FilesystemWorld(World):
    kind = "filesystem"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.root = tmp / "docs"
        self.root.mkdir()

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).for_source(str(self.root))

    def put(self, name: str, text: str) -> None:
        (self.root / f"{name}.md").write_text(text)

    def delete(self, name: str) -> None:
        (self.root / f"{name}.md").unlink()

    def local_paths(self) -> list[Path]:
        return [self.root.resolve()]


class UploadWorld(World):
    kind = "upload"
    multi = False

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.uri = ""
        self.name = ""

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).upload(self.uri)

    def put(self, name: str, text: str) -> None:
        if not self.uri:
            self.uri, self.name = self.factory().new_upload("default", f"{name}.md").root, name
        assert name == self.name, "an upload is one document"
        self.factory().upload(self.uri).path.write_text(text)

    def delete(self, name: str) -> None:
        self.factory().upload(self.uri).remove()

    def name_of(self, item: SourceItem) -> str | None:
        return Path(item.metadata["filename"]).stem

    def local_paths(self) -> list[Path]:
        return [self.factory().upload(self.uri).path]


class WebWorld(World):
    kind = "web"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.site = Site()
        self.names: list[str] = []
        self._index()

    def settings(self) -> dict[str, Any]:
        return {"connectors": {"web": {"allow_private": ["127.0.0.1"], "sitemap": False}}}

    def _index(self) -> None:
        self.site.html("/", "Index", "Our documents.", [f"/{n}.html" for n in self.names])

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).for_source(self.site.url + "/")

    def put(self, name: str, text: str) -> None:
        self.site.html(f"/{name}.html", name.title(), text)
        if name not in self.names:
            self.names.append(name)
            self._index()

    def delete(self, name: str) -> None:
        del self.site.pages[f"/{name}.html"]
        self.names.remove(name)
        self._index()

    def name_of(self, item: SourceItem) -> str | None:
        return None if item.uri == self.site.url + "/" else Path(item.uri).stem

    def hosts(self) -> list[str]:
        return ["127.0.0.1"]

    def close(self) -> None:
        self.site.close()


class S3World(World):
    kind = "s3"

    def __init__(self, tmp: Path, server: S3) -> None:
        super().__init__(tmp)
        self.server = server
        self.client = server.client()
        self.bucket = f"kb-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.client.put_object(Bucket=self.bucket, Key="elsewhere/outside.md", Body=b"not under the prefix")

    def settings(self) -> dict[str, Any]:
        # moto listens on loopback, which a source reaches only when an admin allows it.
        return {"connectors": {"s3": self.server.options, "allow_private": ["127.0.0.1"]}}

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).for_source(f"s3://{self.bucket}/docs/")

    def put(self, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"docs/{name}.md", Body=text.encode())

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"docs/{name}.md")

    def hosts(self) -> list[str]:
        return ["127.0.0.1"]


class GitWorld(World):
    """A repository read in place: what is committed on its branch is the source."""

    kind = "git"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.work = tmp / "repo"
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")

    def source(self) -> str:
        return f"git:{self.work}#main"

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).for_source(self.source())

    def commit(self, message: str) -> None:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)

    def put(self, name: str, text: str) -> None:
        (self.work / f"{name}.md").write_text(text)
        self.commit(f"put {name}")

    def delete(self, name: str) -> None:
        git(self.work, "rm", "-q", f"{name}.md")
        self.commit(f"delete {name}")

    def name_of(self, item: SourceItem) -> str | None:
        return Path(item.metadata["path"]).stem

    def local_paths(self) -> list[Path]:
        return [self.work.resolve()]


class GitCloneWorld(GitWorld):
    """A repository named by URL: cloned into the data directory's cache, fetched on discovery."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.origin = tmp / "origin.git"
        git(tmp, "init", "-q", "--bare", "-b", "main", str(self.origin))

    def source(self) -> str:
        return f"git+{self.origin.as_uri()}#main"

    def commit(self, message: str) -> None:
        super().commit(message)
        git(self.work, "push", "-q", str(self.origin), "main")

    def local_paths(self) -> list[Path]:
        return [self.origin.resolve()]  # a file:// URL reads this host's disk all the same


class SqliteWorld(World):
    kind = "sql"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.db = make_sqlite(tmp / "kb.db", [])
        self.engine = sa.create_engine(f"sqlite:///{self.db}")
        self.table = "articles"

    def source(self) -> str:
        return f"sqlite:///{self.db}#{self.table}"

    def connector(self, max_file_mb: float | None = None) -> Connector:
        return self.factory(max_file_mb).for_source(self.source())

    def put(self, name: str, text: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.table} WHERE title = :t"), {"t": name})
            conn.execute(
                sa.text(f"INSERT INTO {self.table} (id, title, body) VALUES (:i, :t, :b)"),
                {"i": sum(map(ord, name)), "t": name, "b": text},
            )

    def delete(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.table} WHERE title = :t"), {"t": name})

    def name_of(self, item: SourceItem) -> str | None:
        return str(item.metadata["title"])

    def local_paths(self) -> list[Path]:
        return [self.db.resolve()]

    def close(self) -> None:
        self.engine.dispose()


class PostgresWorld(SqliteWorld):
    def __init__(self, tmp: Path, server: Postgres) -> None:
        World.__init__(self, tmp)
        self.url = server.url
        self.engine = sa.create_engine(server.url)
        self.table = f"kb_{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE {self.table} (id integer primary key, title text, body text, "
                    "updated_at text, acl text)"
                )
            )

    def source(self) -> str:
        return f"{self.url}#{self.table}"

    def settings(self) -> dict[str, Any]:
        return {"connectors": {"allow_private": ["127.0.0.1"]}}  # the test server is on loopback

    def local_paths(self) -> list[Path]:
        return []

    def hosts(self) -> list[str]:
        return ["127.0.0.1"]

    def close(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {self.table}"))
        self.engine.dispose()


KINDS = [
    "filesystem",
    "upload",
    "web",
    pytest.param("s3", marks=pytest.mark.services),
    "git",
    "git-clone",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.services),
]


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    made: World
    match request.param:
        case "filesystem":
            made = FilesystemWorld(tmp_path)
        case "upload":
            made = UploadWorld(tmp_path)
        case "web":
            made = WebWorld(tmp_path)
        case "s3":
            made = S3World(tmp_path, request.getfixturevalue("s3_server"))
        case "git":
            made = GitWorld(tmp_path)
        case "git-clone":
            made = GitCloneWorld(tmp_path)
        case "sqlite":
            made = SqliteWorld(tmp_path)
        case _:
            made = PostgresWorld(tmp_path, request.getfixturevalue("postgres"))
    try:
        yield made
    finally:
        made.close()


def listing(world: World, connector: Connector) -> dict[str, SourceItem]:
    items = [i for i in connector.discover() if world.name_of(i) is not None]
    by_name = {world.name_of(i): i for i in items}
    assert len(by_name) == len(items), "one item per document"
    return by_name  # type: ignore[return-value]


def seed(world: World) -> set[str]:
    world.put("alpha", ALPHA)
    if world.multi:
        world.put("beta", BETA)
        return {"alpha", "beta"}
    return {"alpha"}


class TestConnectorConformance:
    def test_it_lists_what_the_source_holds_and_fetches_it(self, world: World) -> None:
        names = seed(world)
        c = world.connector()
        assert c.kind == world.kind
        found = listing(world, c)
        assert set(found) == names
        assert all(i.refused is None and i.version for i in found.values())
        assert ALPHA.encode() in c.fetch(found["alpha"])
        if world.multi:
            assert BETA.encode() in c.fetch(found["beta"])
        assert len({i.uri for i in found.values()}) == len(found)

    def test_a_version_changes_when_the_content_does_and_only_then(self, world: World) -> None:
        seed(world)
        c = world.connector()
        first = listing(world, c)
        assert {n: i.version for n, i in listing(world, c).items()} == {
            n: i.version for n, i in first.items()
        }, "nothing changed: same versions"
        world.put("alpha", ALPHA + " The filter is changed with it.")
        second = listing(world, c)
        assert second["alpha"].uri == first["alpha"].uri
        assert second["alpha"].version != first["alpha"].version
        assert b"The filter is changed with it." in c.fetch(second["alpha"])
        if world.multi:
            assert second["beta"].version == first["beta"].version

    def test_a_deleted_document_leaves_the_listing(self, world: World) -> None:
        names = seed(world)
        c = world.connector()
        assert "alpha" in listing(world, c)
        world.delete("alpha")
        assert set(listing(world, c)) == names - {"alpha"}

    def test_a_document_over_the_size_limit_is_listed_and_refused_with_the_setting(
        self, world: World
    ) -> None:
        if world.multi:
            world.put("alpha", ALPHA)
        world.put("big", BIG)
        c = world.connector(max_file_mb=LIMIT_MB)
        found = listing(world, c)
        assert "big" in found, "an oversized document is still listed, so the report names it"
        with pytest.raises(ApplianceError) as refused:
            c.fetch(found["big"])
        assert MAX_FILE_SETTING in refused.value.message, refused.value.message
        if world.multi:
            assert ALPHA.encode() in c.fetch(found["alpha"]), "the others are read as before"
        # The same document under the default limit is read in full.
        relaxed = world.connector()
        assert BIG.encode() in relaxed.fetch(listing(world, relaxed)["big"])

    def test_options_rebuild_the_same_source_without_secrets_or_settings_only_options(
        self, world: World
    ) -> None:
        seed(world)
        c = world.connector()
        options = c.options()
        stored = json.loads(json.dumps(options))  # what a registered source keeps
        assert "max_file_bytes" not in stored
        assert not {"access_key_id", "secret_access_key"} & set(stored)
        rebuilt = world.factory().rebuild(c.kind, stored)
        assert (rebuilt.kind, rebuilt.root) == (c.kind, c.root)
        found, again = listing(world, c), listing(world, rebuilt)
        assert {n: (i.uri, i.version) for n, i in again.items()} == {
            n: (i.uri, i.version) for n, i in found.items()
        }
        assert ALPHA.encode() in rebuilt.fetch(found["alpha"])
        assert {k: v for k, v in rebuilt.options().items() if k not in SETTINGS_ONLY} == {
            k: v for k, v in options.items() if k not in SETTINGS_ONLY
        }

    def test_it_reports_the_hosts_and_local_paths_it_reaches(self, world: World) -> None:
        seed(world)
        c = world.connector()
        assert c.hosts() == world.hosts()
        assert c.local_paths() == world.local_paths()
        assert all(p.is_absolute() for p in c.local_paths())

    def test_close_is_idempotent(self, world: World) -> None:
        seed(world)
        unused = world.connector()
        unused.close()
        unused.close()
        c = world.connector()
        found = listing(world, c)
        assert ALPHA.encode() in c.fetch(found["alpha"])
        assert c.close() is None
        c.close()
