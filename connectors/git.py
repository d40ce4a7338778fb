"""Git repositories: the files in the tree at the head of a branch. Version = blob id.

A local repository path is read in place, without a clone, so it works offline
and sees new commits at once. A URL (``file://`` included) is cloned bare into ``cache_dir`` (under the data dir)
on first use and fetched on every discovery. Uses the ``git`` command line: no new dependency, and
``GIT_TERMINAL_PROMPT=0`` plus a timeout mean a credential prompt or a dead server fails instead of
hanging. Symlinks and submodules in the tree are skipped (neither is a document, and a symlink's
target may lie outside the repository).

With ``max_file_bytes``, ``fetch`` asks git for the blob's size first and fails an oversized one
without reading it. The size is exact: a blob is addressed by its content, so it can't change
between the check and the read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from appliance.domain import ApplianceError, FileTooLarge, InvalidRequest, SourceItem


class GitError(ApplianceError):
    status, code = 502, "git_error"


def _is_remote(repo: str) -> bool:
    """URLs (``file://`` too: it exercises the same clone path offline) are cloned; paths are not."""
    if "://" in repo:
        return True
    return "@" in repo and ":" in repo and not Path(repo).exists()  # scp-like user@host:path


class GitConnector:
    kind = "git"

    def __init__(
        self,
        repo: str,
        branch: str = "",
        cache_dir: str | None = None,
        extensions: Sequence[str] = (),
        timeout_s: float = 600.0,
        acl: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> None:
        if shutil.which("git") is None:
            raise ApplianceError("the git connector needs the git command line (apt-get install git)")
        self.remote = _is_remote(repo)
        if self.remote:
            self.repo = repo
            if not cache_dir:
                raise InvalidRequest("a remote git source needs a cache_dir to clone into")
            digest = hashlib.sha256(repo.encode()).hexdigest()[:16]
            self.git_dir = Path(cache_dir).expanduser().resolve() / digest
        else:
            path = Path(repo).expanduser()
            if not path.exists():
                raise InvalidRequest(f"git repository not found: {repo}")
            self.repo = str(path.resolve())
            self.git_dir = path.resolve()
        self.cache_dir = cache_dir
        self.branch = branch
        self.extensions = tuple(e.lower() for e in extensions)
        self.timeout_s = timeout_s
        self.acl = tuple(acl)
        self.max_file_bytes = max_file_bytes
        shown = self.repo if self.remote else Path(self.repo).as_uri()
        self.root = f"git+{shown}#{branch or 'HEAD'}"

    def options(self) -> dict[str, object]:
        return {
            "repo": self.repo,
            "branch": self.branch,
            "cache_dir": self.cache_dir,
            "extensions": list(self.extensions),
            "timeout_s": self.timeout_s,
            "acl": list(self.acl),
        }

    def hosts(self) -> list[str]:
        if not self.remote:
            return []
        if "://" in self.repo:
            return [h] if (h := urlsplit(self.repo).hostname) else []
        return [self.repo.split("@", 1)[1].split(":", 1)[0]]

    def local_paths(self) -> list[Path]:
        if not self.remote:
            return [Path(self.repo)]
        if self.repo.lower().startswith("file:"):
            # Cloned like a remote, but it reads this host's disk.
            return [Path(unquote(urlsplit(self.repo).path)).expanduser().resolve()]
        return []

    def close(self) -> None:
        pass  # every git call is its own process

    def _git(self, *args: str, cwd: Path | None = None) -> bytes:
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",
            "GIT_CONFIG_NOSYSTEM": "1",
            # No ext:: or fd:: transports: a repository URL must not be a way to run commands.
            "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
            "LC_ALL": "C",
        }
        cmd = ["git", *args] if cwd is None else ["git", "-C", str(cwd), *args]
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"git {args[0]} took over {self.timeout_s:g} s") from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def _sync(self) -> None:
        """Clone a remote repository on first use, fetch it afterwards."""
        if not self.remote:
            return
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.git_dir.with_suffix(".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            self._git("clone", "--bare", "--quiet", "--", self.repo, str(tmp))
            tmp.rename(self.git_dir)  # a crash mid-clone leaves only the .partial folder
        else:
            self._git(
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "origin",
                "+refs/heads/*:refs/heads/*",
                cwd=self.git_dir,
            )

    def _head(self) -> str:
        ref = self.branch or "HEAD"
        try:
            return (
                self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=self.git_dir)
                .decode()
                .strip()
            )
        except GitError as exc:
            raise GitError(f"branch {ref!r} not found in {self.repo}") from exc

    def discover(self) -> Iterator[SourceItem]:
        self._sync()
        commit = self._head()
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", commit, cwd=self.git_dir)
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, raw_path = entry.partition(b"\t")
            mode, kind, blob = meta.decode().split()
            if kind != "blob" or mode not in ("100644", "100755"):
                continue  # symlinks (120000) and submodules (commit entries)
            path = raw_path.decode("utf-8", "surrogateescape")
            if self.extensions and not path.lower().endswith(self.extensions):
                continue
            yield SourceItem(
                uri=f"{self.root}:{path}",
                version=blob,
                acl=self.acl,
                metadata={"filename": path.rsplit("/", 1)[-1], "path": path, "commit": commit},
            )

    def fetch(self, item: SourceItem) -> bytes:
        if self.max_file_bytes is not None:
            size = int(self._git("cat-file", "-s", item.version, cwd=self.git_dir))
            if size > self.max_file_bytes:
                raise FileTooLarge(self.max_file_bytes, size)
        return self._git("cat-file", "blob", item.version, cwd=self.git_dir)
