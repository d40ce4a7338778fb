"""Filesystem connector on a real directory tree: globs, root confinement, special files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import connectors
from appliance.domain import FileTooLarge, InvalidRequest, SourceItem
from connectors.filesystem import FilesystemConnector


def rel(connector: FilesystemConnector, item: SourceItem) -> str:
    return Path(item.uri.removeprefix("file://")).relative_to(connector.base).as_posix()


def names(connector: FilesystemConnector) -> list[str]:
    return sorted(rel(connector, i) for i in connector.discover() if not i.refused)


def refused(connector: FilesystemConnector) -> dict[str, str]:
    return {rel(connector, i): i.refused for i in connector.discover() if i.refused}


def bytes_read() -> int:
    """Bytes this process has read with read(2) and friends so far (every thread)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "docs" / "drafts").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A\nalpha")
    (root / "docs" / "drafts" / "d.md").write_text("draft")
    (root / "b.txt").write_text("beta")
    (root / "notes.html").write_text("<p>n</p>")
    (root / "x..y.md").write_text("two dots in a name are just a name")
    (root / ".hidden.md").write_text("hidden")
    return root


def test_recursive_with_include_and_exclude(tree: Path) -> None:
    assert names(FilesystemConnector(tree)) == [
        "b.txt",
        "docs/a.md",
        "docs/drafts/d.md",
        "notes.html",
        "x..y.md",
    ]
    assert names(FilesystemConnector(tree, include=["*.md"])) == ["docs/a.md", "docs/drafts/d.md", "x..y.md"]
    assert names(FilesystemConnector(tree, include=["docs/*"], exclude=["docs/drafts"])) == ["docs/a.md"]
    assert names(FilesystemConnector(tree, extensions=[".txt", ".html"])) == ["b.txt", "notes.html"]


def test_never_leaves_its_root(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("salary table")
    (outside / "linked.md").write_text("hard linked")
    (tree / "escape.md").symlink_to(outside / "secret.md")
    (tree / "escape_dir").symlink_to(outside, target_is_directory=True)
    (tree / "inside_link.md").symlink_to(tree / "b.txt")  # inside: same document as b.txt
    os.link(outside / "linked.md", tree / "hardlink.md")
    os.mkfifo(tree / "pipe.md")
    (tree / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    found = names(FilesystemConnector(tree))
    assert "escape.md" not in found and not any(n.startswith("escape_dir") for n in found)
    assert "hardlink.md" not in found, "a file with several links may be a file outside the root"
    assert "pipe.md" not in found
    assert found.count("b.txt") == 1
    assert "hardlink.md" in names(FilesystemConnector(tree, allow_hardlinks=True))

    # What is skipped is still listed, under its name inside the root, with the reason.
    reasons = refused(FilesystemConnector(tree))
    assert reasons == {
        "escape.md": "skipped: symlink points outside the source root",
        "escape_dir": "skipped: symlinked folder points outside the source root",
        "hardlink.md": "skipped: it has 2 hard links and may be a file outside the source root "
        "(connectors.filesystem.allow_hardlinks)",
        "pipe.md": "skipped: not a regular file (a FIFO)",
        "dangling.md": "skipped: broken symlink (its target does not exist)",
    }
    assert "hardlink.md" not in refused(FilesystemConnector(tree, allow_hardlinks=True))
    # A refused item is never opened, even when handed to fetch.
    c = FilesystemConnector(tree)
    escape = next(i for i in c.discover() if i.refused and i.uri.endswith("/escape.md"))
    with pytest.raises(InvalidRequest, match="outside the source root"):
        c.fetch(escape)

    # A forged item naming a file outside the root (e.g. from a tampered ledger) is refused.
    c = FilesystemConnector(tree)
    forged = SourceItem(uri=(tree / ".." / "outside" / "secret.md").as_uri(), version="x")
    with pytest.raises(InvalidRequest, match="outside"):
        c.fetch(forged)


def test_fetch_refuses_a_symlink_swapped_in_after_discovery(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.md").write_text("secret")
    c = FilesystemConnector(tree)
    item = next(i for i in c.discover() if i.uri.endswith("/b.txt"))
    (tree / "b.txt").unlink()
    (tree / "b.txt").symlink_to(tmp_path / "secret.md")
    with pytest.raises((InvalidRequest, OSError)):
        c.fetch(item)


def test_version_follows_content_and_options_rebuild(tree: Path) -> None:
    c = connectors.for_source(str(tree), include=["*.txt"], acl=["group:hr"])
    (item,) = list(c.discover())
    assert c.fetch(item) == b"beta" and item.acl == ("group:hr",)
    (tree / "b.txt").write_text("beta, longer now")
    (again,) = list(c.discover())
    assert again.version != item.version and again.uri == item.uri
    rebuilt = connectors.build(c.kind, **c.options())
    assert rebuilt.root == c.root and [i.uri for i in rebuilt.discover()] == [item.uri]


def test_single_file_and_missing_source(tree: Path) -> None:
    c = connectors.for_source(str(tree / "b.txt"))
    assert [i.metadata["filename"] for i in c.discover()] == ["b.txt"]
    with pytest.raises(InvalidRequest, match="not found"):
        connectors.for_source(str(tree / "nope"))


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tree: Path) -> None:
    huge = tree / "huge.txt"
    with open(huge, "wb") as fh:
        fh.truncate(4 * 2**30)  # sparse: 4 GiB declared, nothing on disk
    c = FilesystemConnector(tree, max_file_bytes=2**20)
    item = next(i for i in c.discover() if i.uri.endswith("/huge.txt"))
    assert item.metadata["size"] == 4 * 2**30
    before = bytes_read()
    with pytest.raises(FileTooLarge) as caught:
        c.fetch(item)
    assert bytes_read() - before < 2**20, "the file was read"
    assert (
        caught.value.message == "file is 4096.0 MiB, over the 1 MiB limit (ingestion.max_file_mb); not read"
    )
    assert c.fetch(next(i for i in c.discover() if i.uri.endswith("/b.txt"))) == b"beta"

    # At the limit exactly is fine; one byte over is not.
    (tree / "edge.txt").write_bytes(b"x" * 2**20)
    assert len(c.fetch(next(i for i in c.discover() if i.uri.endswith("/edge.txt")))) == 2**20
    (tree / "edge.txt").write_bytes(b"x" * (2**20 + 1))
    with pytest.raises(FileTooLarge):
        c.fetch(next(i for i in c.discover() if i.uri.endswith("/edge.txt")))
