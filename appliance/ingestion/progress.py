"""What an ingest run reports: the final counts, and live progress for whoever watches it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.domain import SourceItem


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    elapsed_s: float = 0.0
    reused: int = 0  # documents whose vectors came from an identical document at another URI
    cancelled: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "chunks": self.chunks,
            "reused": self.reused,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class IngestProgress:
    """Live counters of a run, shared with whoever watches it (job API, CLI progress bar).

    ``seen``: items discovered so far; ``done`` and ``failed``: items finished; ``chunks``: chunks
    written. ``listener`` is called after every change with the event name and the item."""

    seen: int = 0
    done: int = 0
    failed: int = 0
    chunks: int = 0
    current: str | None = None
    discovering: bool = True
    started: float = field(default_factory=time.monotonic)
    listener: Callable[[str, SourceItem | None, IngestProgress], None] | None = None

    def emit(self, event: str, item: SourceItem | None = None) -> None:
        if self.listener is not None:
            self.listener(event, item, self)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = self.done + self.failed
        rate = finished / elapsed
        remaining = max(self.seen - finished, 0)
        eta = None if self.discovering or rate == 0 else round(remaining / rate, 1)
        return {
            "seen": self.seen,
            "done": self.done,
            "failed": self.failed,
            "chunks": self.chunks,
            "current": self.current,
            "elapsed_s": round(elapsed, 1),
            "rate_docs_s": round(rate, 3),
            "rate_chunks_s": round(self.chunks / elapsed, 2),
            "eta_s": 0.0 if not self.discovering and remaining == 0 else eta,
        }


# A bare listener, accepted wherever an ``IngestProgress`` is (it is wrapped in one).
Progress = Callable[[str, SourceItem | None, IngestProgress], None]
