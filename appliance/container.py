"""Composition root: reads the settings, builds every service, and is the only place that picks a
backend. Everything is built lazily on first use, so a command pays only for what it touches."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from appliance.domain import Conflict
from appliance.settings import Settings

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy.engine import Engine

    from appliance.audit import AuditLog, QueryRecorder
    from appliance.collections import CollectionService
    from appliance.embeddings.base import Embedder, Reranker
    from appliance.inference.accelerators import ProbeResult
    from appliance.inference.base import InferenceBackend
    from appliance.inference.placement import ModelRequest, Placement
    from appliance.inference.pool import InferencePool
    from appliance.ingestion.connect import ConnectorFactory
    from appliance.ingestion.originals import Originals
    from appliance.ingestion.parsing import ParserPool
    from appliance.ingestion.pipeline import IngestionService
    from appliance.ingestion.queue import CeleryQueue
    from appliance.ingestion.service import IngestionJobs
    from appliance.ingestion.state import Ledger
    from appliance.metering import Metering
    from appliance.observability import Metrics
    from appliance.rag.conversations import ConversationStore
    from appliance.rag.modes import AnswerMode
    from appliance.rag.pipeline import RagService
    from appliance.rag.search import SearchService
    from appliance.readiness import Readiness
    from appliance.retrieval import Retriever
    from appliance.security.auth import KeyStore
    from appliance.security.identity import IdentityStore
    from appliance.security.sessions import SessionStore
    from appliance.settings import ServedModel
    from appliance.sharedstate import Leases
    from appliance.vectorstore.base import VectorStore

log = logging.getLogger(__name__)


class DataDirBusy(Conflict):
    """Another process owns the embedded data directory."""


class Container:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).expanduser().resolve()
        # True between the end of `serve`'s start-up (models loaded, store open) and its shutdown.
        self.ready: bool = False
        self._lock_fh: IO[str] | None = None
        self._closers: list[Callable[[], object]] = []

    # -- ownership of the data dir ------------------------------------------------------------------

    def acquire(self) -> None:
        """Become the single owner of the embedded stores, or fail with who owns them."""
        if self._lock_fh is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fh = open(self.data_dir / "owner.lock", "a+")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            server = read_server_info(self.data_dir)
            where = f" (appliance serve at {server['url']}, pid {server['pid']})" if server else ""
            raise DataDirBusy(
                f"the data directory {self.data_dir} is in use by another process{where}"
            ) from None
        self._lock_fh = fh

    # -- services --------------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        """The metadata DB, migrated to the newest schema: PostgreSQL (or any SQLAlchemy URL) by
        ``database.url``, else SQLite in the data dir."""
        from appliance.db import make_engine

        cfg = self.settings.database
        if cfg.url is not None and cfg.url.get_secret_value():
            target: str | Path = cfg.url.get_secret_value()
        else:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = self.data_dir / "appliance.db"
        engine = make_engine(target, pool_size=cfg.pool_size, max_overflow=cfg.max_overflow)
        self._closers.append(engine.dispose)
        return engine

    @cached_property
    def ledger(self) -> Ledger:
        from appliance.ingestion.state import Ledger

        return Ledger(self.engine)

    @cached_property
    def keys(self) -> KeyStore:
        from appliance.security.auth import KeyStore

        fixed = self.settings.auth.admin_key
        return KeyStore(self.engine, fixed.get_secret_value() if fixed else None)

    @cached_property
    def identity(self) -> IdentityStore:
        from appliance.security.identity import IdentityStore

        return IdentityStore(self.engine)

    @cached_property
    def redis(self) -> Redis | None:
        """The Redis of scale mode (``redis.url``), or None: shared state stays in this process."""
        from appliance.sharedstate import connect, redis_url

        url = redis_url(self.settings)
        if url is None:
            return None
        client = connect(url)
        self._closers.append(client.close)
        return client

    @cached_property
    def leases(self) -> Leases:
        """Capped counters every API replica shares (admission places, token reservations)."""
        from appliance.sharedstate import LocalLeases, RedisLeases

        return LocalLeases() if self.redis is None else RedisLeases(self.redis)

    def session_store(self, namespace: str) -> SessionStore:
        """Where the UI sign-in form at ``namespace`` keeps its sessions: Redis in scale mode."""
        from appliance.security.sessions import MemorySessions, RedisSessions

        return MemorySessions() if self.redis is None else RedisSessions(self.redis, namespace)

    @cached_property
    def metering(self) -> Metering:
        from appliance.metering import Metering
        from appliance.security.throttle import storage_uri

        cfg = self.settings.quotas
        inference = self.settings.inference
        return Metering(
            self.engine,
            cfg.tokens_per_day,
            cfg.requests_per_minute,
            self.leases,
            storage_uri(self.settings),
            # a reservation outlives the longest wait plus the longest generation it covers
            hold_ttl_s=inference.queue_timeout_s + inference.request_timeout_s + 60,
        )

    @cached_property
    def audit(self) -> AuditLog:
        from appliance.audit import open_audit_log

        audit = open_audit_log(self.settings.audit, self.data_dir)
        audit.start()  # a last line torn by a crash is cut off (and recorded) before anything else
        return audit

    @cached_property
    def queries(self) -> QueryRecorder:
        """Questions and searches: metered always, audited when audit.enabled."""
        from appliance.audit import QueryRecorder

        return QueryRecorder(self.audit, self.metering, record_queries=self.settings.audit.enabled)

    @cached_property
    def embedder(self) -> Embedder:
        from appliance.models import resolve_embedding

        cfg = self.settings.embeddings
        entry = resolve_embedding(
            self.settings.models.embedding, self.settings.models.embedding_name, self.data_dir / "models"
        )
        match cfg.backend:
            case "sentence_transformers":
                from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder

                embedder: Embedder = SentenceTransformerEmbedder(
                    entry.name, entry.path, cfg.threads, cfg.batch_size, cfg.dtype
                )
            case "onnx":
                from appliance.embeddings.onnx import OnnxEmbedder

                embedder = OnnxEmbedder(
                    entry.name,
                    entry.path,
                    self.data_dir / "models" / "onnx",
                    cfg.quantize,
                    cfg.threads,
                    cfg.batch_size,
                )
        self._closers.append(embedder.close)
        return embedder

    @cached_property
    def store(self) -> VectorStore:
        cfg = self.settings.vectorstore
        match cfg.backend:
            case "edge":
                from appliance.vectorstore.edge import EdgeVectorStore

                self.acquire()
                store: VectorStore = EdgeVectorStore(self.data_dir / "qdrant")
            case "qdrant":
                from appliance.vectorstore.server import QdrantServerStore

                if not cfg.url:
                    # Local mode keeps its files under the data dir, owned like the Edge shard.
                    self.acquire()
                store = QdrantServerStore(
                    cfg.url,
                    cfg.api_key.get_secret_value() if cfg.api_key else None,
                    path=None if cfg.url else self.data_dir / "qdrant-local",
                    shards=cfg.shards,
                    replicas=cfg.replicas,
                    prefix=cfg.collection_prefix,
                )
        self._closers.append(store.close)
        return store

    @cached_property
    def reranker(self) -> Reranker | None:
        """The cross-encoder stage, or None when no model is configured (the default)."""
        path = self.settings.retrieval.rerank_model
        if not path:
            return None
        from appliance.embeddings.rerank import CrossEncoderReranker

        reranker = CrossEncoderReranker(Path(path).expanduser(), self.settings.embeddings.threads)
        self._closers.append(reranker.close)
        return reranker

    @cached_property
    def parser(self) -> ParserPool:
        from appliance.ingestion.formats import ArchiveLimits, OcrOptions
        from appliance.ingestion.parsing import ParseLimits, ParserPool
        from appliance.models import resolve_spacy

        cfg = self.settings.ingestion
        limits = ParseLimits(
            timeout_s=cfg.parse_timeout_s,
            memory_mb=cfg.parse_memory_mb,
            max_file_bytes=int(cfg.max_file_mb * 2**20),
            max_text_bytes=int(cfg.max_text_mb * 2**20),
            archive=ArchiveLimits(int(cfg.max_archive_mb * 2**20), cfg.max_archive_entries),
            ocr=OcrOptions(cfg.ocr, cfg.ocr_languages, cfg.ocr_dpi),
            nice=cfg.parse_nice,
        )
        pool = ParserPool(resolve_spacy(self.settings.models.spacy).path, limits, cfg.parse_workers)
        self._closers.append(pool.close)
        return pool

    @cached_property
    def metrics(self) -> Metrics:
        from appliance.observability import Metrics

        return Metrics()

    @cached_property
    def probes(self) -> list[ProbeResult]:
        from appliance.inference.accelerators import probe_all

        return probe_all()

    def model_plan(self) -> list[tuple[ModelRequest, Placement, ServedModel]]:
        """(request, placement, served-model settings) for every chat model: the default one first."""
        from appliance.inference.placement import ModelRequest, place
        from appliance.models import resolve_llm
        from appliance.settings import ServedModel

        cfg = self.settings.inference
        default = ServedModel(
            name=self.settings.models.llm_name,
            backend=cfg.backend,
            path=self.settings.models.llm,
            url=cfg.url,
            urls=cfg.urls,
            api_key=cfg.api_key,
            size=self.settings.models.llm_size,
        )
        plan: list[tuple[ModelRequest, Placement, ServedModel]] = []
        for served in [default, *cfg.models]:
            remote = served.backend == "remote"
            replicas = len(served.urls) if remote and served.urls else served.replicas or cfg.replicas
            entry = None if remote else resolve_llm(served.path or "default", served.name)
            slots = cfg.max_num_seqs if served.backend == "vllm" or (entry and entry.format != "gguf") else 1
            req = ModelRequest(served.name, entry, served.backend, cfg.context_tokens, replicas * slots)
            plan.append((req, place(req, self.probes, cfg.gpu_memory_utilization), served))
        return plan

    def auto_modes(self) -> dict[str, AnswerMode]:
        """The answer mode ``rag.answer_mode: auto`` gives each chat model, from its size."""
        from appliance.models import parse_size
        from appliance.rag.modes import auto_mode

        return {
            req.name: auto_mode(req.entry.parameters if req.entry else parse_size(served.size))
            for req, _, served in self.model_plan()
        }

    def _replicas(
        self, req: ModelRequest, placement: Placement, served: ServedModel
    ) -> list[InferenceBackend]:
        from appliance.domain import Unavailable

        cfg = self.settings.inference
        count = served.replicas or cfg.replicas
        entry = req.entry
        # place() gives llama.cpp and vLLM only models with local weights (an entry).
        match placement.backend:
            case "llamacpp" if entry is not None:
                from appliance.inference.backends.llamacpp import LlamaCppBackend

                logs = self.data_dir / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                # The thread budget is shared by the replicas: llama.cpp's threads spin at barriers,
                # and more threads than cores makes every worker collapse, not just slow down.
                threads = max(1, cfg.threads // count)
                return [
                    LlamaCppBackend(
                        req.name,
                        entry.path,
                        cfg.context_tokens,
                        threads,
                        cfg.batch_tokens,
                        start_timeout_s=cfg.worker_start_timeout_s,
                        request_timeout_s=cfg.request_timeout_s,
                        warm_messages=_warm_messages() if cfg.warm_prefix else None,
                        log_file=logs / f"worker-{req.name}-{i}.log",
                        replica=i,
                        platform=placement.platform or "cpu",  # mps: layers offloaded to Metal
                    )
                    for i in range(count)
                ]
            case "vllm" if entry is not None:
                from appliance.inference.backends.vllm import VllmBackend

                return [
                    VllmBackend(
                        req.name,
                        entry.path,
                        entry.format,
                        cfg.context_tokens,
                        placement.tensor_parallel,
                        [d.index for d in placement.devices],
                        placement.platform or "cuda",
                        cfg.gpu_memory_utilization,
                        cfg.max_num_seqs,
                        cfg.vllm_args,
                        start_timeout_s=cfg.worker_start_timeout_s,
                        request_timeout_s=cfg.request_timeout_s,
                        replica=i,
                    )
                    for i in range(count)
                ]
            case "remote":
                from appliance.inference.backends.remote import RemoteBackend

                # Servers by URL (vLLM replicas, other nodes), one replica each; or one URL `count` times.
                urls = served.urls or ([served.url] * count if served.url else [])
                if not urls:
                    raise Unavailable(f"model {req.name!r} is remote but has no url")
                key = served.api_key.get_secret_value() if served.api_key else None
                return [
                    RemoteBackend(
                        req.name,
                        url,
                        key,
                        served.remote_model or None,
                        cfg.context_tokens,
                        cfg.max_num_seqs,
                        cfg.request_timeout_s,
                        replica=i,
                    )
                    for i, url in enumerate(urls)
                ]
            case _:
                raise Unavailable(f"cannot serve model {req.name!r}: {placement.reason}")

    @cached_property
    def pool(self) -> InferencePool:
        from appliance.inference.pool import InferencePool

        cfg = self.settings.inference
        backends = [
            b for req, placement, served in self.model_plan() for b in self._replicas(req, placement, served)
        ]
        pool = InferencePool(
            backends,
            cfg.max_queue,
            cfg.queue_timeout_s,
            request_timeout_s=cfg.request_timeout_s,
            health_interval_s=cfg.health_interval_s,
            metrics=self.metrics,
            max_queue_per_user=cfg.max_queue_per_user or max(1, cfg.max_queue // 2),
            # scale mode: the queue's caps count every API replica's waiting requests
            leases=self.leases if self.redis is not None else None,
        )
        self._closers.append(pool.close)
        return pool

    @cached_property
    def readiness(self) -> Readiness:
        """What /readyz checks at request time: store, inference, DB, and Redis when set."""
        from appliance.readiness import Readiness

        return Readiness(self.store, self.pool, self.engine, self.redis)

    @cached_property
    def retriever(self) -> Retriever:
        from appliance.retrieval import Relevance, Retriever
        from appliance.vectorstore.hybrid import FusionConfig

        r = self.settings.retrieval
        rag = self.settings.rag
        return Retriever(
            self.embedder,
            self.store,
            self.reranker,
            r.rerank_candidates,
            FusionConfig(
                prefetch=r.prefetch,
                rrf_k=r.rrf_k,
                dense_weight=r.dense_weight,
                bm25_weight=r.bm25_weight,
                max_per_document=r.max_per_document,
                method=r.fusion,
            ),
            Relevance(rag.candidates, rag.min_relevance, rag.relative_relevance),
            self.collections.bm25_weight,
        )

    @cached_property
    def search(self) -> SearchService:
        """Retrieval as users ask for it, recorded; needs no chat model."""
        from appliance.rag.search import SearchService

        r = self.settings.rag
        return SearchService(self.retriever, self.queries, r.default_collection, r.top_k)

    @cached_property
    def rag(self) -> RagService:
        from appliance.inference.base import GenerationParams
        from appliance.rag.pipeline import RagOptions, RagService

        cfg = self.settings
        r = cfg.rag
        return RagService(
            self.retriever,
            self.embedder,
            self.pool,
            self.queries,  # meters always, audits when audit.enabled
            r.top_k,
            r.default_collection,
            GenerationParams(max_tokens=cfg.inference.max_tokens, temperature=cfg.inference.temperature),
            RagOptions(
                answer_mode=r.answer_mode,
                auto_modes=self.auto_modes(),
                min_support=r.min_support,
                min_answer_support=r.min_answer_support,
                condense=r.condense,
                history_turns=r.history_turns,
                source_tokens=r.source_tokens,
            ),
            self.conversations,
            metering=self.metering,
        )

    @cached_property
    def conversations(self) -> ConversationStore:
        from appliance.rag.conversations import ConversationStore

        return ConversationStore(self.engine)

    @cached_property
    def collections(self) -> CollectionService:
        from appliance.collections import CollectionService

        return CollectionService(self.engine, self.store, self.embedder, self.ledger)

    @cached_property
    def originals(self) -> Originals:
        """Documents' original files and text previews, for their readers."""
        from appliance.ingestion.originals import Originals

        return Originals(self.connectors, self.ledger, self.store)

    @cached_property
    def ingestion(self) -> IngestionService:
        from appliance.ingestion.pipeline import IngestionService

        cfg = self.settings.ingestion
        return IngestionService(
            self.embedder, self.store, self.ledger, self.parser, cfg.chunk_tokens, cfg.chunk_overlap_tokens
        )

    @cached_property
    def connectors(self) -> ConnectorFactory:
        """The one place connectors are built: settings-derived options, reach and egress checks."""
        from appliance.ingestion.connect import ConnectorConfig, ConnectorFactory

        return ConnectorFactory(ConnectorConfig.from_settings(self.settings), self.data_dir)

    @cached_property
    def job_queue(self) -> CeleryQueue | None:
        """Where jobs run: None (the embedded default) on one writer thread of this process; with
        ``redis.url`` (scale mode) on Celery workers over Redis (``appliance worker``)."""
        from appliance.sharedstate import redis_url

        url = redis_url(self.settings)
        if url is None or self.redis is None:
            return None
        from appliance.ingestion.queue import CeleryQueue

        return CeleryQueue(url, self.redis, self.settings.ingestion.worker_lost_after_s)

    @property
    def _secrets_key(self) -> str | None:
        key = self.settings.auth.secrets_key
        return key.get_secret_value() if key else None

    @cached_property
    def jobs(self) -> IngestionJobs:
        """Ingestion jobs, sources and documents; jobs run where ``job_queue`` says."""
        from appliance.ingestion.jobs import JobManager
        from appliance.ingestion.service import IngestionJobs
        from appliance.ingestion.sources import SourceStore
        from appliance.security.secrets import SecretBox

        queue = self.job_queue
        if queue is None:
            self.acquire()  # the writer thread writes the data dir's stores
        # Built first so they close after the jobs: a job stopping at shutdown must not find
        # the parser gone and fail its documents for it.
        self.parser  # noqa: B018
        cfg = self.settings.ingestion
        jobs = IngestionJobs(
            manager=JobManager(
                self.engine,
                cfg.scheduler_tick_s,
                cfg.keep_jobs_days,
                cfg.keep_jobs,
                dispatch=queue,
                requeue_after_s=cfg.worker_lost_after_s,
            ),
            sources=SourceStore(self.engine, SecretBox.for_data_dir(self.data_dir, self._secrets_key)),
            connectors=self.connectors,
            ingestion=self.ingestion,
            ledger=self.ledger,
            collections=self.collections,
            store=self.store,
            audit=self.audit,
            default_collection=self.settings.rag.default_collection,
            default_interval_s=int(cfg.default_sync_interval_s),
            identity=self.identity,
        )
        self._closers.append(jobs.close)
        return jobs

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                log.exception("error while closing %s", closer)
        self._closers.clear()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None


def _warm_messages() -> list[dict[str, str]]:
    """The RAG system prompt, for llama.cpp workers to prefill at start (their KV cache keeps it)."""
    from appliance.rag import prompts

    system = getattr(prompts, "SYSTEM", "")
    return [{"role": "system", "content": system}, {"role": "user", "content": ""}] if system else []


# -- the running server, as seen by local CLI commands -------------------------------------------


def write_server_info(data_dir: Path, url: str, token: str) -> None:
    run = data_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    path = run / "serve.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "pid": os.getpid(), "token": token}, fh)


def read_server_info(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / "run" / "serve.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info  # type: ignore[no-any-return]


def clear_server_info(data_dir: Path) -> None:
    (data_dir / "run" / "serve.json").unlink(missing_ok=True)
