"""Qdrant server adapter through qdrant-client: one Qdrant collection per knowledge base.

With a URL it talks to a Qdrant server or cluster (any number of appliance processes may share it).
Without one it uses qdrant-client's local mode under the data dir: exact search in this process,
a stand-in for tests and small installs, not for large collections (see bench/retrieval.py).
Keyword scoring is BM25 over sparse vectors we encode ourselves (see bm25.py), which local mode,
the server and Qdrant Edge all score identically, so the adapters return the same results.
"""

from __future__ import annotations

import logging
import threading
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

UPSERT_BATCH = 256


class QdrantServerStore(HybridSearchMixin):
    def __init__(
        self,
        url: str | None,
        api_key: str | None = None,
        path: Path | None = None,
        fusion: FusionConfig | None = None,
        shards: int = 1,
        replicas: int = 1,
        prefix: str = "kb_",
        timeout_s: float = 30.0,
    ) -> None:
        if not url and path is None:
            raise ValueError("a Qdrant URL or a local path is needed")
        self.url = url
        self.api_key = api_key
        self.path = path
        self.fusion = fusion or FusionConfig()
        self.shards = shards
        self.replicas = replicas
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._client: Any = None
        self._known: set[str] = set()
        self._sparse: dict[str, str] = {}  # collection -> its BM25 vector name (tokenizer version)
        self._ahead: dict[tuple[str, str], SparseVector] = {}  # see HybridSearchMixin.encode_ahead
        self._ahead_lock = threading.Lock()
        self._lock = threading.RLock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from qdrant_client import QdrantClient

                if self.url:
                    self._client = QdrantClient(
                        url=self.url, api_key=self.api_key, timeout=int(self.timeout_s)
                    )
                else:
                    assert self.path is not None
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = QdrantClient(path=str(self.path))
            return self._client

    def _name(self, collection: str) -> str:
        return self.prefix + validate_collection_name(collection)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; a server that cannot be reached is a 503, not a crash."""
        try:
            return fn(*args, **kwargs)
        except (ConnectionError, OSError) as exc:
            raise Unavailable(f"Qdrant at {self.url or self.path} is unreachable ({what}): {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ in ("ResponseHandlingException", "ConnectError", "ConnectTimeout"):
                raise Unavailable(f"Qdrant at {self.url} is unreachable ({what}): {exc}") from exc
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        from qdrant_client import models

        full = self._name(name)
        with self._lock:
            if self._call("collection_exists", self.client.collection_exists, full):
                info = self._call("get_collection", self.client.get_collection, full)
                vectors = info.config.params.vectors
                stored = vectors.get(DENSE) if isinstance(vectors, dict) else None
                if stored is not None and int(stored.size) != dim:
                    raise InvalidRequest(
                        f"collection {name!r} holds {stored.size}-dimensional vectors, the embedder makes {dim}"
                    )
                self._sparse[name] = self._stored_sparse(info)
                self._known.add(name)
                return
            self._call(
                "create_collection",
                self.client.create_collection,
                full,
                vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
                sparse_vectors_config={
                    CURRENT_SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                shard_number=self.shards,
                replication_factor=self.replicas,
            )
            # Local mode has no payload indexes (it scans); on a server they keep filtered search fast.
            if self.url:
                for field in KEYWORD_FIELDS:
                    keyword = models.KeywordIndexParams(type="keyword", enable_hnsw=field in GRAPH_FIELDS)
                    self.client.create_payload_index(full, field, keyword, wait=True)
                for field in FLOAT_FIELDS:
                    number = models.FloatIndexParams(type="float", enable_hnsw=field in GRAPH_FIELDS)
                    self.client.create_payload_index(full, field, number, wait=True)
            self._sparse[name] = CURRENT_SPARSE
            self._known.add(name)

    @staticmethod
    def _stored_sparse(info: Any) -> str:
        names = [n for n in info.config.params.sparse_vectors or {} if n in SPARSE_VERSIONS]
        return max(names, key=SPARSE_VERSIONS.__getitem__) if names else CURRENT_SPARSE

    def _sparse_name(self, collection: str) -> str:
        name = self._sparse.get(collection)
        if name is None:
            full = self._require(collection)
            info = self._call("get_collection", self.client.get_collection, full)
            name = self._sparse[collection] = self._stored_sparse(info)
        return name

    def collections(self) -> list[str]:
        response = self._call("get_collections", self.client.get_collections)
        names = [c.name for c in response.collections]
        return sorted(n[len(self.prefix) :] for n in names if n.startswith(self.prefix))

    def _require(self, collection: str) -> str:
        full = self._name(collection)
        if collection not in self._known:
            if not self._call("collection_exists", self.client.collection_exists, full):
                raise InvalidRequest(f"collection {collection!r} does not exist")
            self._known.add(collection)
        return full

    def drop_collection(self, name: str) -> None:
        """Delete a collection; a missing one is not an error."""
        full = self._name(name)
        self._known.discard(name)
        self._sparse.pop(name, None)
        if self._call("collection_exists", self.client.collection_exists, full):
            self._call("delete_collection", self.client.delete_collection, full)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    # -- writes ----------------------------------------------------------------------------------

    def upsert(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        from qdrant_client import models

        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        if not chunks:
            return
        full = self._require(collection)
        points = []
        name = self._sparse_name(collection)
        for c, v in zip(chunks, vectors, strict=True):
            sparse = self._encoded(name, c.text)
            points.append(
                models.PointStruct(
                    id=c.id,
                    vector={
                        DENSE: v.astype(np.float32).tolist(),
                        name: models.SparseVector(indices=sparse.indices, values=sparse.values),
                    },
                    payload=c.payload(),
                )
            )
        for start in range(0, len(points), UPSERT_BATCH):
            # wait=True: acknowledged means applied, which is what flush() promises the caller.
            self._call(
                "upsert", self.client.upsert, full, points=points[start : start + UPSERT_BATCH], wait=True
            )

    def delete(self, collection: str, document_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not document_ids:
            return
        flt = models.Filter(
            must=[models.FieldCondition(key="document_id", match=models.MatchAny(any=list(document_ids)))]
        )
        self._call(
            "delete",
            self.client.delete,
            self._require(collection),
            points_selector=models.FilterSelector(filter=flt),
            wait=True,
        )

    def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not chunk_ids:
            return
        self._call(
            "delete",
            self.client.delete,
            self._require(collection),
            points_selector=models.PointIdsList(points=list(chunk_ids)),
            wait=True,
        )

    def flush(self, collection: str) -> None:
        # Every write waited for the server's acknowledgement already.
        self._require(collection)

    def optimize(self, collection: str) -> None:
        # A Qdrant server (and local mode) runs its optimisers by itself.
        self._require(collection)

    # -- reads -----------------------------------------------------------------------------------

    @staticmethod
    def _filter(flt: SearchFilter | None) -> Any:
        from qdrant_client import models

        return qdrant_filter(flt, models, models.Range)

    def _run_queries(
        self,
        collection: str,
        queries: Sequence[SideQuery],
        filter: SearchFilter | None,
        with_vectors: bool = False,
    ) -> SideResults:
        from qdrant_client import models

        flt = self._filter(filter)
        requests = []
        for side in queries:
            query: Any = (
                models.SparseVector(indices=side.sparse.indices, values=side.sparse.values)
                if side.sparse is not None
                else side.dense
            )
            requests.append(
                models.QueryRequest(
                    query=query,
                    using=side.using,
                    filter=flt,
                    limit=side.limit,
                    with_payload=True,
                    with_vector=[DENSE] if with_vectors else False,
                )
            )
        responses = self._call(
            "query", self.client.query_batch_points, self._require(collection), requests=requests
        )
        found = SideResults(
            [
                [Candidate(str(p.id), float(p.score), p.payload or {}) for p in response.points]
                for response in responses
            ]
        )
        if with_vectors:
            found.vectors.update((str(p.id), p.vector) for response in responses for p in response.points)
        return found

    def _retrieve(self, collection: str, chunk_ids: Sequence[str], with_vectors: bool) -> list[Any]:
        return list(
            self._call(
                "retrieve",
                self.client.retrieve,
                self._require(collection),
                ids=list(chunk_ids),
                with_payload=True,
                with_vectors=with_vectors,
            )
        )

    def get(self, collection: str, chunk_ids: Sequence[str]) -> list[Chunk]:
        records = self._retrieve(collection, chunk_ids, with_vectors=False)
        return [Chunk.from_payload(str(r.id), r.payload or {}) for r in records]

    def count(self, collection: str) -> int:
        full = self._name(collection)
        if not self._call("collection_exists", self.client.collection_exists, full):
            return 0
        return int(self._call("count", self.client.count, full, exact=True).count)

    # -- ingestion bookkeeping (reuse of vectors by content hash, ledger vs index checks) ---------

    def get_with_vectors(self, collection: str, chunk_ids: Sequence[str]) -> list[tuple[Chunk, np.ndarray]]:
        records = self._retrieve(collection, chunk_ids, with_vectors=True)
        out = []
        for r in records:
            vector = dense_vector(r.vector)
            if vector is not None:
                out.append((Chunk.from_payload(str(r.id), r.payload or {}), vector))
        return out

    def point_index(self, collection: str, page: int = 1000) -> list[tuple[str, str, int]]:
        """(point id, document id, position) of every point in the collection."""
        full = self._name(collection)
        if not self._call("collection_exists", self.client.collection_exists, full):
            return []
        out: list[tuple[str, str, int]] = []
        offset = None
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                full,
                limit=page,
                offset=offset,
                with_payload=["document_id", "index"],
                with_vectors=False,
            )
            for r in records:
                payload = r.payload or {}
                out.append((str(r.id), str(payload.get("document_id", "")), int(payload.get("index", -1))))
            if offset is None or not records:
                return out
