"""Local folders and files. Never leaves its root.

- Symlinks are resolved and followed only when the target lies inside the root; symlinked folders
  are never descended into (their files are reached through their real path, if inside).
- Hard links: a regular file with more than one link may be another name of a file outside the
  root, and nothing on Linux tells which names an inode has, so such files are skipped unless
  ``allow_hardlinks`` is set (an admin who knows the tree, e.g. a deduplicated backup).
- FIFOs, sockets and devices are skipped (reading a FIFO would block forever).
- What is skipped for safety is still listed, as a ``refused`` item with the reason, so the job
  report accounts for every file; nothing of it is read (a refused item is never fetched).
- ``fetch`` re-checks the path: it must still be a regular file inside the root, opened without
  following a symlink swapped in since discovery; with ``max_file_bytes`` its size is checked
  with ``fstat`` before reading, and no more than that is read (the file may grow meanwhile).
- ``include`` / ``exclude`` are glob patterns (``fnmatch``: ``*`` also matches ``/``) tried on the
  path relative to the root and on the bare file name; an excluded folder is not walked.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from appliance.domain import FileTooLarge, InvalidRequest, SourceItem, read_capped

log = logging.getLogger(__name__)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


class FilesystemConnector:
    kind = "filesystem"

    def __init__(
        self,
        root: Path | str,
        extensions: Sequence[str] = (),
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        allow_hardlinks: bool = False,
        acl: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> None:
        path = Path(str(root).removeprefix("file://")).expanduser()
        if not path.exists():
            raise InvalidRequest(f"source not found: {root}")
        self.base = path.resolve()
        self.root = self.base.as_uri()
        self.extensions = tuple(e.lower() for e in extensions)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.allow_hardlinks = allow_hardlinks
        self.acl = tuple(acl)
        self.max_file_bytes = max_file_bytes

    def options(self) -> dict[str, object]:
        return {
            "root": str(self.base),
            "extensions": list(self.extensions),
            "include": list(self.include),
            "exclude": list(self.exclude),
            "allow_hardlinks": self.allow_hardlinks,
            "acl": list(self.acl),
        }

    def hosts(self) -> list[str]:
        return []

    def local_paths(self) -> list[Path]:
        return [self.base]

    def close(self) -> None:
        pass  # nothing held open between calls

    def _wanted(self, rel: str) -> bool:
        if self.extensions and not rel.lower().endswith(self.extensions):
            return False
        if self.include and not _matches(rel, self.include):
            return False
        return not (self.exclude and _matches(rel, self.exclude))

    def _inside(self, real: Path) -> bool:
        return real == self.base or real.is_relative_to(self.base)

    def _refused(self, path: Path, reason: str) -> SourceItem:
        # The name inside the root, never the target: the report must not point outside it.
        log.warning("skipping %s: %s", path, reason)
        return SourceItem(
            uri=path.as_uri(),
            version="",
            acl=self.acl,
            metadata={"filename": path.name},
            refused=f"skipped: {reason}",
        )

    def _item(self, path: Path) -> SourceItem | None:
        try:
            real = path.resolve(strict=True)
            st = real.stat()
        except RuntimeError:  # a symlink loop
            return self._refused(path, "symlink loop")
        except FileNotFoundError:
            if path.is_symlink():
                return self._refused(path, "broken symlink (its target does not exist)")
            return None  # deleted since the folder was listed: gone, not refused
        except OSError as exc:
            return self._refused(path, f"cannot be read: {exc.strerror or exc}")
        if not self._inside(real):
            return self._refused(path, "symlink points outside the source root")
        if not stat.S_ISREG(st.st_mode):
            return self._refused(path, f"not a regular file ({_file_type(st.st_mode)})")
        if st.st_nlink > 1 and not self.allow_hardlinks:
            return self._refused(
                path,
                f"it has {st.st_nlink} hard links and may be a file outside the source root "
                "(connectors.filesystem.allow_hardlinks)",
            )
        return SourceItem(
            uri=real.as_uri(),
            version=f"{st.st_mtime_ns}-{st.st_size}",
            acl=self.acl,
            metadata={"filename": real.name, "size": st.st_size, "modified": st.st_mtime},
        )

    def _linked_folder(self, path: Path) -> SourceItem | None:
        """A symlinked folder is never walked; one pointing outside the root is reported."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return self._refused(path, "symlinked folder that cannot be resolved")
        if self._inside(real):
            return None  # its files are listed under their real path
        return self._refused(path, "symlinked folder points outside the source root")

    def discover(self) -> Iterator[SourceItem]:
        if not self.base.is_dir():
            if item := self._item(self.base):
                yield item
            return
        yielded: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.base, followlinks=False):
            here = Path(dirpath)
            rel_dir = here.relative_to(self.base).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and not (self.exclude and _matches(prefix + d, self.exclude))
            )
            for name in [d for d in dirnames if (here / d).is_symlink()]:
                if item := self._linked_folder(here / name):
                    yield item
            for name in sorted(filenames):
                if name.startswith(".") or not self._wanted(prefix + name):
                    continue
                item = self._item(here / name)
                if item and item.uri not in yielded:  # a symlink and its target are one document
                    yielded.add(item.uri)
                    yield item

    def fetch(self, item: SourceItem) -> bytes:
        if item.refused:
            raise InvalidRequest(item.refused)
        path = Path(unquote(urlparse(item.uri).path))
        if not self._inside(path.resolve()):
            raise InvalidRequest(f"{item.uri} is outside {self.base}")
        # O_NOFOLLOW|O_NONBLOCK: a symlink or FIFO swapped in since discovery is refused, not read.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequest(f"{item.uri} is no longer a regular file")
            if self.max_file_bytes is not None and st.st_size > self.max_file_bytes:
                raise FileTooLarge(self.max_file_bytes, st.st_size)
            return read_capped(fh.read, self.max_file_bytes)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"
