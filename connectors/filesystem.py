"""Local folders and files. Never leaves its root: symlinks pointing outside are skipped."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from appliance.domain import SourceItem

log = logging.getLogger(__name__)


class FilesystemConnector:
    kind = "filesystem"

    def __init__(self, root: Path, extensions: Sequence[str] = (), acl: Sequence[str] = ()) -> None:
        self.base = Path(root).resolve()
        self.root = self.base.as_uri()
        self.extensions = tuple(e.lower() for e in extensions)
        self.acl = tuple(acl)

    def _wanted(self, path: Path) -> bool:
        return not self.extensions or path.suffix.lower() in self.extensions

    def _item(self, path: Path) -> SourceItem | None:
        try:
            real = path.resolve()
            st = real.stat()
        except OSError as exc:
            log.warning("skipping %s: %s", path, exc)
            return None
        if self.base.is_dir() and not real.is_relative_to(self.base):
            log.warning("skipping %s: it points outside %s", path, self.base)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None  # FIFOs, sockets, devices
        return SourceItem(
            uri=real.as_uri(),
            version=f"{st.st_mtime_ns}-{st.st_size}",
            acl=self.acl,
            metadata={"filename": real.name, "size": st.st_size, "modified": st.st_mtime},
        )

    def discover(self) -> Iterator[SourceItem]:
        if self.base.is_file():
            item = self._item(self.base)
            if item:
                yield item
            return
        for dirpath, dirnames, filenames in os.walk(self.base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if self._wanted(path) and (item := self._item(path)):
                    yield item

    def fetch(self, item: SourceItem) -> bytes:
        path = Path(unquote(urlparse(item.uri).path))
        return path.read_bytes()
