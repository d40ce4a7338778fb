"""The alternatives the appliance is measured against, each as its documentation recommends for a
local pipeline, over the SAME MiniLM folder the appliance embeds with (offline, no hub):

- LangChain: langchain-community's UnstructuredFileLoader (unstructured in process, the "fast"
  PDF strategy, its own spaCy pipeline), RecursiveCharacterTextSplitter, HuggingFaceEmbeddings
  (float32, torch on every core), InMemoryVectorStore.
- LlamaIndex: SimpleDirectoryReader -> SentenceSplitter -> HuggingFaceEmbedding ->
  VectorStoreIndex (in memory). Without llama-index-readers-file (its pins conflict with ours)
  SimpleDirectoryReader reads every file as text, so it is compared on text formats only.

Each at two chunkings (``chunking``): ``"equal"``, the appliance's target and overlap in tokens
of the same MiniLM tokenizer (RecursiveCharacterTextSplitter.from_huggingface_tokenizer,
SentenceSplitter(tokenizer=...)), the fair comparison: the same number of ~200-token chunks to
embed; ``"defaults"``, what their documentation starts with (1000/200 characters; 1024/200
tiktoken tokens), which makes 2-5x fewer, larger chunks that MiniLM truncates at 256 word pieces
(the text past the window is never embedded).

Both are warm when timed: models loaded, one embedding call made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)


class LangChainPipeline:
    name = "langchain"
    binary_formats = True

    def __init__(
        self,
        model_path: Path,
        spacy_path: Path,
        threads: int = 2,
        chunking: tuple[int, int] | None = None,
        embeddings: Any = None,
    ) -> None:
        """``chunking``: (target, overlap) in MiniLM tokens, or None for LangChain's defaults.
        ``embeddings``: another pipeline's (loaded once, shared)."""
        from langchain_community.embeddings import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from appliance.ingestion.parsing import _use_local_spacy

        # unstructured in this process would otherwise try to download its spaCy model; it gets the
        # pipeline unstructured itself would load (the dependency parser for sentences).
        _use_local_spacy(str(spacy_path), senter=False)
        import torch

        torch.set_num_threads(threads)  # LangChain's default: torch on every core
        self.embeddings = embeddings or HuggingFaceEmbeddings(
            model_name=str(model_path), model_kwargs={"device": "cpu", "local_files_only": True}
        )
        self.embeddings.embed_documents(["warm up"])
        if chunking:
            self.splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
                _tokenizer(model_path), chunk_size=chunking[0], chunk_overlap=chunking[1]
            )
        else:
            self.splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
        self.store: Any = None

    def ingest(self, folder: Path) -> dict[str, float]:
        from langchain_community.document_loaders import UnstructuredFileLoader
        from langchain_core.vectorstores import InMemoryVectorStore

        files = sorted(p for p in folder.iterdir() if p.is_file())
        t = time.perf_counter()
        docs = []
        for path in files:
            docs.extend(UnstructuredFileLoader(str(path), strategy="fast").load())
        splits = self.splitter.split_documents(docs)
        self.store = InMemoryVectorStore(self.embeddings)
        self.store.add_documents(splits)
        return {"docs": len(files), "chunks": len(splits), "seconds": time.perf_counter() - t}

    def search(self, question: str, k: int) -> list[str]:
        """File names of the top ``k`` chunks of the last ingested folder."""
        return [Path(d.metadata.get("source", "")).name for d in self.store.similarity_search(question, k=k)]


class LlamaIndexPipeline:
    name = "llamaindex"
    binary_formats = False

    def __init__(
        self,
        model_path: Path,
        threads: int = 2,
        chunking: tuple[int, int] | None = None,
        embed_model: Any = None,
    ) -> None:
        """``chunking``: (target, overlap) in MiniLM tokens, or None for LlamaIndex's defaults.
        ``embed_model``: another pipeline's (loaded once, shared)."""
        import torch
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        torch.set_num_threads(threads)
        self.embed_model = embed_model or HuggingFaceEmbedding(model_name=str(model_path), device="cpu")
        self.embed_model.get_text_embedding("warm up")
        if chunking:
            tokenizer = _tokenizer(model_path)
            self.splitter = SentenceSplitter(
                chunk_size=chunking[0],
                chunk_overlap=chunking[1],
                tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False),
            )
        else:
            self.splitter = SentenceSplitter()
        self.index: Any = None

    def ingest(self, folder: Path) -> dict[str, float]:
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

        t = time.perf_counter()
        documents = SimpleDirectoryReader(str(folder)).load_data()
        self.index = VectorStoreIndex.from_documents(
            documents, transformations=[self.splitter], embed_model=self.embed_model
        )
        return {
            "docs": len(documents),
            "chunks": len(self.index.docstore.docs),
            "seconds": time.perf_counter() - t,
        }

    def search(self, question: str, k: int) -> list[str]:
        nodes = self.index.as_retriever(similarity_top_k=k).retrieve(question)
        return [n.node.metadata.get("file_name", "") for n in nodes]
