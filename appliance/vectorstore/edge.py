"""Qdrant Edge adapter: one in-process shard directory per collection.

A shard directory has exactly one owner process (the data-dir lock in ``appliance.container``
guarantees it). The WAL stays on so a crash loses nothing acknowledged by ``flush()``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.domain import Chunk, InvalidRequest, Unavailable, validate_collection_name
from appliance.vectorstore.base import SearchFilter
from appliance.vectorstore.bm25 import SparseVector
from appliance.vectorstore.fusion import Candidate
from appliance.vectorstore.hybrid import (
    CURRENT_SPARSE,
    DENSE,
    FLOAT_FIELDS,
    GRAPH_FIELDS,
    KEYWORD_FIELDS,
    SPARSE_VERSIONS,
    FusionConfig,
    HybridSearchMixin,
    SideQuery,
    SideResults,
    dense_vector,
    qdrant_filter,
)

log = logging.getLogger(__name__)

# What the optimising child runs: at the lowest CPU priority, open the shard, optimise it, say
# whether anything changed.
_OPTIMIZE = (
    "import os, sys\n"
    "os.nice(19)\n"
    "import qdrant_edge as q\n"
    "shard = q.EdgeShard.load(sys.argv[1])\n"
    "changed = shard.optimize()\n"
    "shard.close()\n"
    "print(bool(changed))\n"
)
# Dense vector bytes under which optimising runs in this process: under half of Qdrant's default
# indexing threshold (10,000 KB, e.g. 6,600 x 384 floats), so no HNSW index is built and nothing
# holds the GIL for long (measured: 0.0 s at 3,000 x 384; the index build at 8,000 took 5 CPU s).
IN_PROCESS_OPTIMIZE_BYTES = 4 * 2**20


class EdgeVectorStore(HybridSearchMixin):
    def __init__(self, root: Path, fusion: FusionConfig | None = None) -> None:
        self.root = root
        self.fusion = fusion or FusionConfig()
        self._shards: dict[str, Any] = {}
        self._sparse: dict[str, str] = {}  # collection -> its BM25 vector name (tokenizer version)
        self._lock = threading.RLock()
        self._ahead: dict[tuple[str, str], SparseVector] = {}  # see HybridSearchMixin.encode_ahead
        self._ahead_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def _shard(self, collection: str) -> Any:
        import qdrant_edge as q

        validate_collection_name(collection)
        with self._lock:
            shard = self._shards.get(collection)
            if shard is None:
                path = self.root / collection
                if not (path / "edge_config.json").is_file():
                    raise InvalidRequest(f"collection {collection!r} does not exist")
                try:
                    shard = q.EdgeShard.load(str(path))
                except Exception as exc:  # qdrant_edge raises a bare Exception for damaged files
                    # This collection fails on its own; the others and the collection list go on.
                    log.error("collection %s cannot be opened: %s", collection, exc)
                    raise Unavailable(
                        f"collection {collection!r} cannot be opened: its index files are damaged; "
                        "restore them from a backup, or delete the collection and ingest it again"
                    ) from exc
                self._shards[collection] = shard
            return shard

    def ensure_collection(self, name: str, dim: int) -> None:
        import qdrant_edge as q

        validate_collection_name(name)
        path = self.root / name
        with self._lock:
            if (path / "edge_config.json").is_file():
                self._shard(name)
                stored, sparse = self._vector_config(path)
                if stored is not None and stored != dim:
                    raise InvalidRequest(
                        f"collection {name!r} holds {stored}-dimensional vectors, the embedder makes {dim}"
                    )
                if sparse is None:
                    raise InvalidRequest(
                        f"collection {name!r} was created before BM25 sparse vectors; delete "
                        f"{path} and ingest its documents again"
                    )
                return
            path.mkdir(parents=True, exist_ok=True)
            config = q.EdgeConfig(
                vectors={DENSE: q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)},
                # BM25: documents carry term-frequency weights, the store applies IDF (see bm25.py).
                sparse_vectors={CURRENT_SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
                wal_enabled=True,
            )
            shard = q.EdgeShard.create(str(path), config)
            for field in KEYWORD_FIELDS:
                keyword = q.KeywordIndexParams(enable_hnsw=field in GRAPH_FIELDS)
                shard.update(q.UpdateOperation.create_field_index(field, keyword))
            for field in FLOAT_FIELDS:
                number = q.FloatIndexParams(enable_hnsw=field in GRAPH_FIELDS)
                shard.update(q.UpdateOperation.create_field_index(field, number))
            shard.flush()
            self._shards[name] = shard
            self._sparse[name] = CURRENT_SPARSE

    @staticmethod
    def _vector_config(path: Path) -> tuple[int | None, str | None]:
        """The stored dense size (None if unreadable) and the BM25 sparse vector's name (None if
        the collection has none)."""
        import json

        try:
            config = json.loads((path / "edge_config.json").read_text())
        except (OSError, ValueError):
            return None, CURRENT_SPARSE
        try:
            size: int | None = int(config["vectors"][DENSE]["size"])
        except (KeyError, ValueError, TypeError):
            size = None
        names = [n for n in config.get("sparse_vectors") or {} if n in SPARSE_VERSIONS]
        return size, max(names, key=SPARSE_VERSIONS.__getitem__) if names else None

    def _sparse_name(self, collection: str) -> str:
        with self._lock:
            name = self._sparse.get(collection)
            if name is None:
                validate_collection_name(collection)
                name = self._vector_config(self.root / collection)[1] or CURRENT_SPARSE
                self._sparse[collection] = name
            return name

    def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "edge_config.json").is_file())

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its files; a missing one is not an error."""
        import shutil

        validate_collection_name(name)
        with self._lock:
            shard = self._shards.pop(name, None)
            self._sparse.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                try:
                    shard.flush()
                finally:
                    shard.close()
            self._shards.clear()

    # -- writes ----------------------------------------------------------------------------------

    def upsert(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        import qdrant_edge as q

        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        if not chunks:
            return
        points = []
        name = self._sparse_name(collection)
        for c, v in zip(chunks, vectors, strict=True):
            sparse = self._encoded(name, c.text)
            vector = {
                DENSE: v.astype(np.float32).tolist(),
                name: q.SparseVector(sparse.indices, sparse.values),
            }
            points.append(q.Point(id=c.id, vector=vector, payload=c.payload()))
        with self._lock:
            self._shard(collection).update(q.UpdateOperation.upsert_points(points))

    def delete(self, collection: str, document_ids: Sequence[str]) -> None:
        import qdrant_edge as q

        if not document_ids:
            return
        flt = q.Filter(must=[q.FieldCondition(key="document_id", match=q.MatchAny(any=list(document_ids)))])
        with self._lock:
            self._shard(collection).update(q.UpdateOperation.delete_points_by_filter(flt))

    def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None:
        import qdrant_edge as q

        if not chunk_ids:
            return
        with self._lock:
            self._shard(collection).update(q.UpdateOperation.delete_points(list(chunk_ids)))

    def flush(self, collection: str) -> None:
        with self._lock:
            self._shard(collection).flush()

    def optimize(self, collection: str) -> None:
        # Edge has no background optimiser: without this call every point stays in the plain
        # appendable segment and search is brute force (7.7 ms at 40k x 384 here, 1.2 ms after).
        # It is incremental (nothing below the indexing threshold) but holds the GIL for its whole
        # run, minutes for a large collection: in this process the event loop, and so /healthz,
        # would stop answering. So it runs in a child process at the lowest CPU priority, on the
        # shard this process closes meanwhile (a shard has one owner at a time); requests to the
        # store wait for the lock as they would for the optimiser, the rest of the server answers.
        # A collection whose vectors are smaller than IN_PROCESS_OPTIMIZE_BYTES is optimised here:
        # below the indexing threshold no index is built, so the call takes milliseconds, while
        # starting the child (an interpreter, qdrant_edge, the shard) took 0.3-0.5 s on an idle
        # host and 7 s on a busy one at nice 19 (bench/profile_ingest.py), at the end of every run.
        with self._lock:
            started = time.monotonic()
            shard = self._shard(collection)  # fails now, as before, for a missing or damaged collection
            dim = self._vector_config(self.root / collection)[0] or 0
            if shard.info().points_count * dim * 4 < IN_PROCESS_OPTIMIZE_BYTES:
                shard.optimize()
                return
            self._shards.pop(collection).close()
            done = subprocess.run(
                [sys.executable, "-c", _OPTIMIZE, str(self.root / collection)],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"optimising collection {collection!r} failed: {done.stderr.strip()[-2000:]}")
        if done.stdout.strip() == "True":
            log.info("optimised collection %s in %.1f s", collection, time.monotonic() - started)

    # -- reads -----------------------------------------------------------------------------------

    @staticmethod
    def _filter(flt: SearchFilter | None) -> Any:
        import qdrant_edge as q

        return qdrant_filter(flt, q, q.RangeFloat)

    def _run_queries(
        self,
        collection: str,
        queries: Sequence[SideQuery],
        filter: SearchFilter | None,
        with_vectors: bool = False,
    ) -> SideResults:
        import qdrant_edge as q

        flt = self._filter(filter)
        requests = []
        for side in queries:
            if side.sparse is not None:
                sparse = q.SparseVector(side.sparse.indices, side.sparse.values)
                query: Any = q.Query.Nearest(sparse, using=side.using)
            else:
                query = q.Query.Nearest(side.dense or [], using=DENSE)
            requests.append(
                q.QueryRequest(
                    limit=side.limit,
                    query=query,
                    filter=flt,
                    with_payload=True,
                    with_vector=[DENSE] if with_vectors else False,
                )
            )
        with self._lock:
            results = self._shard(collection).query_batch(q.QueryBatchRequest(requests))
        found = SideResults(
            [[Candidate(str(p.id), float(p.score), p.payload or {}) for p in points] for points in results]
        )
        if with_vectors:
            found.vectors.update((str(p.id), p.vector) for points in results for p in points)
        return found

    def get(self, collection: str, chunk_ids: Sequence[str]) -> list[Chunk]:
        with self._lock:
            records = self._shard(collection).retrieve(list(chunk_ids), with_payload=True, with_vector=False)
        return [Chunk.from_payload(str(r.id), r.payload or {}) for r in records]

    def count(self, collection: str) -> int:
        import qdrant_edge as q

        if collection not in self.collections():
            return 0
        with self._lock:
            return int(self._shard(collection).count(q.CountRequest(exact=True)))

    # -- ingestion bookkeeping (reuse of vectors by content hash, ledger vs shard checks) ---------

    def get_with_vectors(self, collection: str, chunk_ids: Sequence[str]) -> list[tuple[Chunk, np.ndarray]]:
        with self._lock:
            records = self._shard(collection).retrieve(list(chunk_ids), with_payload=True, with_vector=True)
        out = []
        for r in records:
            vector = dense_vector(r.vector)
            if vector is not None:
                out.append((Chunk.from_payload(str(r.id), r.payload or {}), vector))
        return out

    def point_index(self, collection: str, page: int = 1000) -> list[tuple[str, str, int]]:
        """(point id, document id, position) of every point in the collection."""
        import qdrant_edge as q

        if collection not in self.collections():
            return []
        out: list[tuple[str, str, int]] = []
        offset = None
        while True:
            request = q.ScrollRequest(
                offset=offset, limit=page, with_payload=["document_id", "index"], with_vector=False
            )
            with self._lock:
                records, offset = self._shard(collection).scroll(request)
            for r in records:
                payload = r.payload or {}
                out.append((str(r.id), str(payload.get("document_id", "")), int(payload.get("index", -1))))
            if offset is None or not records:
                return out
