"""sentence-transformers (torch) embedder, loaded from a local folder only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class SentenceTransformerEmbedder:
    def __init__(self, name: str, path: Path, threads: int = 2, batch_size: int = 32) -> None:
        self.name = name
        self.path = path
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self._counter: Any = None
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads
        self._start_lock = threading.Lock()
        self.dim = 0
        self.max_tokens = 0

    def start(self) -> None:
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
            self.dim = int(get_dim())
            self.max_tokens = int(model.max_seq_length)
            # A tokenizer of its own for counting: ingestion chunks the next documents on other
            # threads while this one embeds, and sharing the model's (whose truncation setting
            # encode() changes, hence the model lock) made every count wait for a whole document.
            counter = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
            self._model = model  # last: a set _model means everything else is ready

    @property
    def model(self) -> Any:
        if self._model is None:
            self.start()
        return self._model

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # torch modules are not safe to call from several threads at once.
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

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
