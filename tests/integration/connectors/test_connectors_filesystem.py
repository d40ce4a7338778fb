"""Filesystem connector on a real directory tree: globs, root confinement, special files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import connectors
from appliance.domain import InvalidRequest, SourceItem
from connectors.filesystem import FilesystemConnector


def names(connector: FilesystemConnector) -> list[str]:
    return sorted(
        Path(i.uri.removeprefix("file://")).relative_to(connector.base).as_posix()
        for i in connector.discover()
    )


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
    found = names(FilesystemConnector(tree))
    assert "escape.md" not in found and not any(n.startswith("escape_dir") for n in found)
    assert "hardlink.md" not in found, "a file with several links may be a file outside the root"
    assert "pipe.md" not in found
    assert found.count("b.txt") == 1
    assert "hardlink.md" in names(FilesystemConnector(tree, allow_hardlinks=True))

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
