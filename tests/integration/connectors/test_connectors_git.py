"""Git connector on repositories made by the test: local path, branches, and a file:// clone."""

from __future__ import annotations

from pathlib import Path

import pytest

import connectors
from connectors.git import GitConnector, GitError
from tests.integration.connectors.conftest import git, make_repo


def listing(c: object) -> dict[str, str]:
    return {i.metadata["path"]: i.version for i in c.discover()}  # type: ignore[attr-defined]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(
        tmp_path / "handbook", {"README.md": "# Handbook\n", "hr/leave.md": "30 days\n", "tool.py": "x=1\n"}
    )
    (r / "link.md").symlink_to("README.md")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "symlink")
    return r


def test_local_repo_versions_are_blob_ids(repo: Path) -> None:
    c = connectors.for_source(f"git:{repo}", extensions=[".md"])
    assert isinstance(c, GitConnector) and c.root == f"git+{repo.as_uri()}#HEAD"
    first = listing(c)
    assert set(first) == {"README.md", "hr/leave.md"}, "symlinks and other extensions are skipped"
    assert first["README.md"] == git(repo, "rev-parse", "HEAD:README.md")
    item = next(i for i in c.discover() if i.metadata["path"] == "hr/leave.md")
    assert c.fetch(item) == b"30 days\n"

    (repo / "hr" / "leave.md").write_text("31 days\n")
    assert listing(c) == first, "uncommitted changes are not in the tree"
    git(repo, "commit", "-qam", "more leave")
    second = listing(c)
    assert second["hr/leave.md"] != first["hr/leave.md"]
    assert second["README.md"] == first["README.md"]


def test_branch_from_suffix_or_option(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "dev-only.md").write_text("draft\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "dev")
    git(repo, "checkout", "-q", "main")
    assert "dev-only.md" in listing(connectors.for_source(f"git:{repo}#dev"))
    assert "dev-only.md" not in listing(connectors.for_source(f"git:{repo}", branch="main"))
    # The SOURCE string wins over a default from the settings.
    assert "dev-only.md" in listing(connectors.for_source(f"git:{repo}#dev", branch="main"))
    with pytest.raises(GitError, match="nope"):
        list(connectors.for_source(f"git:{repo}#nope").discover())


def test_file_url_is_cloned_into_the_cache_and_fetched(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    cache = tmp_path / "cache"
    url_c = connectors.for_source(f"git+{bare.as_uri()}#main", cache_dir=str(cache))
    assert isinstance(url_c, GitConnector) and url_c.remote
    assert set(listing(url_c)) >= {"README.md", "hr/leave.md"}
    assert [p.name for p in cache.iterdir()] == [url_c.git_dir.name], "cloned into the cache dir"
    # A new commit pushed to the origin shows up on the next discovery.
    (repo / "new.md").write_text("new\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "new")
    git(repo, "push", "-q", str(bare), "main")
    assert "new.md" in listing(url_c)
    rebuilt = connectors.build("git", **url_c.options())
    assert rebuilt.root == url_c.root


def test_a_dot_git_path_is_a_git_source(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    c = connectors.for_source(str(bare))
    assert c.kind == "git" and "hr/leave.md" in listing(c)


def test_a_command_transport_url_is_refused(tmp_path: Path) -> None:
    from appliance.domain import InvalidRequest

    marker = tmp_path / "pwned"
    for spec in (f"git+ext::sh -c touch% {marker}", f"git+ext::sh -c touch% {marker}://x"):
        with pytest.raises((InvalidRequest, GitError)):
            c = connectors.for_source(spec, cache_dir=str(tmp_path / "cache"))
            list(c.discover())
    assert not marker.exists()


def test_a_blob_over_the_size_limit_is_refused_by_its_size(repo: Path) -> None:
    from appliance.domain import FileTooLarge

    (repo / "big.md").write_bytes(b"x" * (2**20 + 1))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "big")
    c = connectors.for_source(f"git:{repo}", extensions=[".md"], max_file_bytes=2**20)
    items = {i.metadata["path"]: i for i in c.discover()}
    with pytest.raises(FileTooLarge, match=r"over the 1 MiB limit \(ingestion.max_file_mb\); not read"):
        c.fetch(items["big.md"])
    assert c.fetch(items["hr/leave.md"]) == b"30 days\n"
    assert "max_file_bytes" not in c.options(), "the limit comes from the settings, not a stored source"
