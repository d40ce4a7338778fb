"""Qdrant Edge adapter: one in-process shard directory per collection.

A shard directory has exactly one owner process (the data-dir lock in ``appliance.container``
guarantees it). The WAL stays on so a crash loses nothing acknowledged by ``flush()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.domain import Chunk, InvalidRequest, ScoredChunk, validate_collection_name
from appliance.vectorstore.base import SearchFilter

log = logging.getLogger(__name__)

DENSE = "dense"
TEXT_FIELD = "text"
KEYWORD_FIELDS = ("document_id", "collection", "uri", "acl")


class EdgeVectorStore:
    def __init__(self, root: Path, prefetch: int = 30, rrf_k: int = 60) -> None:
        self.root = root
        self.prefetch = prefetch
        self.rrf_k = rrf_k
        self._shards: dict[str, Any] = {}
        self._lock = threading.RLock()

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
                shard = q.EdgeShard.load(str(path))
                self._shards[collection] = shard
            return shard

    def ensure_collection(self, name: str, dim: int) -> None:
        import qdrant_edge as q

        validate_collection_name(name)
        path = self.root / name
        with self._lock:
            if (path / "edge_config.json").is_file():
                self._shard(name)
                stored = self._dense_size(path)
                if stored is not None and stored != dim:
                    raise InvalidRequest(
                        f"collection {name!r} holds {stored}-dimensional vectors, the embedder makes {dim}"
                    )
                return
            path.mkdir(parents=True, exist_ok=True)
            config = q.EdgeConfig(
                vectors={DENSE: q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)},
                wal_enabled=True,
            )
            shard = q.EdgeShard.create(str(path), config)
            # BM25 over a full-text index of the chunk text; the multilingual tokenizer splits CJK.
            shard.update(
                q.UpdateOperation.create_field_index(
                    TEXT_FIELD,
                    q.TextIndexParams(tokenizer=q.TokenizerType.Multilingual, lowercase=True, scoring=True),
                )
            )
            for field in KEYWORD_FIELDS:
                shard.update(q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Keyword))
            shard.flush()
            self._shards[name] = shard

    @staticmethod
    def _dense_size(path: Path) -> int | None:
        import json

        try:
            config = json.loads((path / "edge_config.json").read_text())
            return int(config["vectors"][DENSE]["size"])
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "edge_config.json").is_file())

    def drop_collection(self, name: str) -> None:
        """Close the shard and remove its directory."""
        import shutil

        validate_collection_name(name)
        with self._lock:
            shard = self._shards.pop(name, None)
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
        points = [
            q.Point(id=c.id, vector={DENSE: v.astype(np.float32).tolist()}, payload=c.payload())
            for c, v in zip(chunks, vectors, strict=True)
        ]
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

    # -- reads -----------------------------------------------------------------------------------

    @staticmethod
    def _filter(flt: SearchFilter | None) -> Any:
        import qdrant_edge as q

        if flt is None:
            return None
        must: list[Any] = []
        if flt.acl_any is not None:
            must.append(q.FieldCondition(key="acl", match=q.MatchAny(any=list(flt.acl_any))))
        if flt.document_ids:
            must.append(q.FieldCondition(key="document_id", match=q.MatchAny(any=list(flt.document_ids))))
        return q.Filter(must=must) if must else None

    def search(
        self,
        collection: str,
        query_vec: np.ndarray,
        query_text: str,
        filter: SearchFilter | None,
        k: int,
    ) -> list[ScoredChunk]:
        import qdrant_edge as q

        flt = self._filter(filter)
        prefetch = max(self.prefetch, k)
        prefetches = [
            q.Prefetch(
                limit=prefetch,
                query=q.Query.Nearest(query_vec.astype(np.float32).tolist(), using=DENSE),
                filter=flt,
            )
        ]
        if query_text.strip():
            prefetches.append(
                q.Prefetch(limit=prefetch, query=q.TextQuery(TEXT_FIELD, query_text), filter=flt)
            )
        request = q.QueryRequest(
            limit=k, prefetches=prefetches, query=q.Fusion.Rrf(k=self.rrf_k), filter=flt, with_payload=True
        )
        with self._lock:
            points = self._shard(collection).query(request)
        return [ScoredChunk(Chunk.from_payload(str(p.id), p.payload or {}), float(p.score)) for p in points]

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
