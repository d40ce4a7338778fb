"""sentence-transformers (torch) embedder, loaded from a local folder only.

On CPUs with AMX-BF16 (Intel Sapphire Rapids and later) the weights run in bfloat16: oneDNN's
AMX kernels embed 2.3-3.6x faster than fp32 here, and the vectors agree with fp32 to cosine
> 0.9999. The agreement is measured on a fixed sample at start; below ``MIN_BF16_COSINE`` the
embedder stays in fp32 and logs why. Without AMX, bfloat16 is emulated and slower, so ``auto``
keeps fp32.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.embeddings.base import on_torch_thread

log = logging.getLogger(__name__)

MIN_BF16_COSINE = 0.999
# Agreement sample: prose, a table row, code, CJK and a long run, so the check covers the inputs
# the appliance really embeds.
_SAMPLE = (
    "The turbine gearbox warranty covers bearings for five years after commissioning.",
    "Expense reports above 5,000 EUR need the approval of a department head.",
    "id | item | note\n1 | transformer | inspected, oil level nominal",
    "def rotate(key: bytes) -> None:  # new API keys every 90 days",
    "年假申请须提前两周提交，由直属主管审批。",
    "Safety training certificates expire after 24 months; crews renew them in March. " * 6,
)


def bf16_accelerated(isa: list[str] | None = None) -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AMX-BF16)."""
    if isa is None:
        from appliance.inference.accelerators import probe_cpu

        isa = list(probe_cpu().details.get("isa", []))
    return "AMX-BF16" in isa


class SentenceTransformerEmbedder:
    def __init__(
        self, name: str, path: Path, threads: int = 2, batch_size: int = 32, dtype: str = "auto"
    ) -> None:
        self.name = name
        self.path = path
        self.threads = threads
        self.batch_size = batch_size
        self.requested_dtype = dtype
        self.dtype = "float32"  # what runs, once started
        self.bf16_min_cosine: float | None = None
        self._model: Any = None
        self._counter: Any = None
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads
        self._start_lock = threading.Lock()
        self.dim = 0
        self.max_tokens = 0

    def start(self) -> None:
        if self._model is None:
            on_torch_thread(self._start)

    def _start(self) -> None:
        with self._start_lock:  # two first requests at once load the model once
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer
            from tokenizers import Tokenizer

            torch.set_num_threads(self.threads)
            model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            self.dim = int(get_dim())  # type: ignore[arg-type]
            self.max_tokens = int(model.max_seq_length)  # type: ignore[arg-type]
            # A tokenizer of its own for counting: ingestion chunks the next documents on other
            # threads while this one embeds, and sharing the model's (whose truncation setting
            # encode() changes, hence the model lock) made every count wait for a whole document.
            counter = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
            if self.requested_dtype == "bfloat16" or (self.requested_dtype == "auto" and bf16_accelerated()):
                model = self._to_bf16(model)
            self._model = model  # last: a set _model means everything else is ready

    def _to_bf16(self, model: Any) -> Any:
        import torch

        reference = self._encode(model, list(_SAMPLE))
        # A copy: casting back from bfloat16 would not give the float32 weights back.
        candidate = copy.deepcopy(model).to(torch.bfloat16)
        vectors = self._encode(candidate, list(_SAMPLE))
        self.bf16_min_cosine = float((reference * vectors).sum(axis=1).min())
        if self.bf16_min_cosine < MIN_BF16_COSINE:
            log.warning(
                "bfloat16 embeddings disagree with float32 (min cosine %.5f < %s); using float32",
                self.bf16_min_cosine,
                MIN_BF16_COSINE,
            )
            return model
        self.dtype = "bfloat16"
        log.info("embedding in bfloat16 (min cosine %.5f against float32)", self.bf16_min_cosine)
        return candidate

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        # numpy has no bfloat16: widen before converting; renormalise what rounding moved.
        out = vectors.float().cpu().numpy().astype(np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    @property
    def model(self) -> Any:
        if self._model is None:
            self.start()
        return self._model

    def embed_documents(self, texts: Sequence[str], threads: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return on_torch_thread(self._embed, self.model, list(texts), threads)

    def _embed(self, model: Any, texts: list[str], threads: int | None) -> np.ndarray:
        # One call at a time (the torch thread runs one; the lock keeps that true for any other
        # caller). torch's thread count is process-wide: a call that asks for fewer threads gets
        # them back to the default after.
        with self._lock:
            if threads is None or threads == self.threads:
                return self._encode(model, texts)
            import torch

            torch.set_num_threads(max(1, threads))
            try:
                return self._encode(model, texts)
            finally:
                torch.set_num_threads(self.threads)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, text: str) -> int:
        counter = self._counter
        if counter is None:
            self.start()
            counter = self._counter
        # Special tokens ([CLS], [SEP]) count against the model's limit too. The counter is never
        # reconfigured after start, so threads may encode with it at once.
        return len(counter.encode(text).ids)

    def close(self) -> None:
        self._model = None
        self._counter = None
