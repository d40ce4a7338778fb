"""Cross-encoder reranker (sentence-transformers ``CrossEncoder``), loaded from a local folder only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.domain import ModelNotFound
from appliance.embeddings.base import on_torch_thread


class CrossEncoderReranker:
    def __init__(self, path: Path, threads: int = 2, batch_size: int = 16) -> None:
        self.path = path
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._model is None:
            on_torch_thread(self._start)

    def _start(self) -> None:
        if self._model is not None:
            return
        if not (self.path / "config.json").is_file():
            raise ModelNotFound(f"rerank model folder not found or incomplete: {self.path}")
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(self.threads)
        self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)

    def scores(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        self.start()
        out = on_torch_thread(self._predict, [(query, p) for p in passages])
        return np.asarray(out, dtype=np.float32).reshape(len(passages), -1)[:, -1]

    def _predict(self, pairs: list[tuple[str, str]]) -> Any:
        with self._lock:  # torch modules are not safe to call from several threads at once
            return self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)

    def close(self) -> None:
        self._model = None
