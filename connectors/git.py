"""Git repositories: the files in the tree at the head of a branch. Version = blob id.

A local repository path is read in place, without a clone, so it works offline
and sees new commits at once. A URL (``file://`` included) is cloned bare into ``cache_dir`` (under the data dir)
on first use and fetched on every discovery. Uses the ``git`` command line: no new dependency, and
``GIT_TERMINAL_PROMPT=0`` plus a timeout mean a credential prompt or a dead server fails instead of
hanging. Symlinks and submodules in the tree are skipped (neither is a document, and a symlink's
target may lie outside the repository).

A remote's host is resolved and checked here like a web host (``connectors._reach``: no loopback,
private, link-local or metadata address unless ``connectors.allow_private`` names it), and git is
made to connect to that checked address: ``http.curloptResolve`` for http(s), ssh's ``HostName``
(with ``HostKeyAlias`` keeping the name for known_hosts) for ssh, the address itself in a git://
URL. Redirects, proxies and the user's and system's git configuration (``insteadOf`` rewrites,
credential helpers) are off. A failed clone or fetch is reported by kind (unreachable, login,
not found), never with git's text, which carries resolved addresses and the server's banner.

With ``max_file_bytes``, ``fetch`` asks git for the blob's size first and fails an oversized one
without reading it. The size is exact: a blob is addressed by its content, so it can't change
between the check and the read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from appliance.domain import ApplianceError, FileTooLarge, InvalidRequest, SourceItem
from connectors._reach import Reach

log = logging.getLogger(__name__)

_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}
# Variables that would send git's traffic elsewhere than the checked address.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "GIT_PROXY_COMMAND", "GIT_SSH")
# What a failed remote operation is reported as, from git's own text (which is not shown).
_FAILURES = (
    (
        (
            "could not resolve",
            "failed to connect",
            "connection refused",
            "timed out",
            "no route",
            "couldn't connect",
            "network is unreachable",
            "connection reset",
            "ssl",
        ),
        "could not reach the server",
    ),
    (
        ("authentication", "permission denied", "could not read username", "403", "401", "host key"),
        "the server refused the login",
    ),
    (
        ("not found", "does not appear to be a git repository", "404", "repository", "does not exist"),
        "the repository was not found",
    ),
)


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
        allow_private: Sequence[str] = (),
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
        self.allow_private = list(allow_private)
        self.reach = Reach(allow_private)
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
            "allow_private": self.allow_private,
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

    def _git(
        self,
        *args: str,
        cwd: Path | None = None,
        config: Sequence[str] = (),
        env: dict[str, str] | None = None,
        remote: bool = False,
    ) -> bytes:
        """Run git; ``remote``: a clone or fetch, whose failure is reported without git's text."""
        base = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS and k.lower() not in _PROXY_VARS}
        run_env = {
            **base,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",
            "GIT_CONFIG_NOSYSTEM": "1",
            # The account's own config may rewrite URLs (insteadOf) or add proxies and helpers.
            "GIT_CONFIG_GLOBAL": os.devnull,
            # No ext:: or fd:: transports: a repository URL must not be a way to run commands.
            "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
            "LC_ALL": "C",
            **(env or {}),
        }
        options = [arg for c in config for arg in ("-c", c)]
        cmd = ["git", *options, *args] if cwd is None else ["git", "-C", str(cwd), *options, *args]
        try:
            done = subprocess.run(cmd, env=run_env, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"git {args[0]} took over {self.timeout_s:g} s") from exc
        if done.returncode != 0:
            text = done.stderr.decode("utf-8", "replace").strip()
            if remote:
                log.debug("git %s of %s failed: %s", args[0], self.root, text)
                lowered = text.lower()
                reason = next(
                    (why for needles, why in _FAILURES if any(n in lowered for n in needles)),
                    f"git exited with {done.returncode}",
                )
                raise GitError(f"git {args[0]} of {self.root} failed: {reason}")
            message = text.splitlines()
            raise GitError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def _pinned(self) -> tuple[str, list[str], dict[str, str]]:
        """The URL, ``-c`` settings and environment that make git connect to the checked address
        of the remote's host (none for ``file://``)."""
        config = ["http.followRedirects=false", "http.proxy="]
        if self.repo.lower().startswith("file:"):
            return self.repo, config, {}
        if "://" in self.repo:
            parts = urlsplit(self.repo)
            scheme, host = parts.scheme.lower(), parts.hostname or ""
        else:  # scp-like user@host:path
            scheme, host = "ssh", self.repo.split("@", 1)[1].split(":", 1)[0]
            parts = None
        if scheme not in _PORTS or not host:
            raise InvalidRequest(f"git sources are reached over {', '.join(_PORTS)} or file://")
        port = (parts.port if parts is not None else None) or _PORTS[scheme]
        address = self.reach.address(host, port, f"the git repository {self.root}")
        bracketed = f"[{address}]" if ":" in address else address
        if scheme in ("http", "https"):
            if address == host.strip("[]"):
                return self.repo, config, {}  # an address already: nothing for DNS to change
            return self.repo, [*config, f"http.curloptResolve={host}:{port}:{bracketed}"], {}
        if scheme == "ssh":
            ssh = [
                "ssh",
                "-o",
                f"HostName={address}",
                "-o",
                f"HostKeyAlias={host}",
                "-o",
                "BatchMode=yes",
                "-o",
                "ProxyCommand=none",
                "-o",
                "ProxyJump=none",
            ]
            return self.repo, config, {"GIT_SSH_COMMAND": shlex.join(ssh), "GIT_SSH_VARIANT": "ssh"}
        assert parts is not None  # git:// has no TLS name to keep: the URL names the address
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        netloc += bracketed + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc)), config, {}

    def _sync(self) -> None:
        """Clone a remote repository on first use, fetch it afterwards."""
        if not self.remote:
            return
        url, config, env = self._pinned()
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.git_dir.with_suffix(".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            self._git("clone", "--bare", "--quiet", "--", url, str(tmp), config=config, env=env, remote=True)
            tmp.rename(self.git_dir)  # a crash mid-clone leaves only the .partial folder
        else:
            # The URL, not the clone's "origin": the address is checked again on every fetch.
            self._git(
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
                cwd=self.git_dir,
                config=config,
                env=env,
                remote=True,
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
