"""The alternatives the appliance is measured against, each as its documentation recommends for a
local pipeline, over the SAME MiniLM folder the appliance embeds with (offline, no hub):

- LangChain: langchain-community's UnstructuredFileLoader (unstructured in process, the "fast"
  PDF strategy, its own spaCy pipeline), RecursiveCharacterTextSplitter 1000/200 characters,
  HuggingFaceEmbeddings (float32, torch on every core), InMemoryVectorStore.
- LlamaIndex: SimpleDirectoryReader -> SentenceSplitter (its defaults) -> HuggingFaceEmbedding ->
  VectorStoreIndex (in memory). Without llama-index-readers-file (its pins conflict with ours)
  SimpleDirectoryReader reads every file as text, so it is compared on text formats only.

Both are warm when timed: models loaded, one embedding call made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class LangChainPipeline:
    name = "langchain"
    binary_formats = True

    def __init__(self, model_path: Path, spacy_path: Path, threads: int = 2) -> None:
        from langchain_community.embeddings import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from appliance.ingestion.parsing import _use_local_spacy

        # unstructured in this process would otherwise try to download its spaCy model; it gets the
        # pipeline unstructured itself would load (the dependency parser for sentences).
        _use_local_spacy(str(spacy_path), senter=False)
        import torch

        torch.set_num_threads(threads)  # LangChain's default: torch on every core
        self.embeddings = HuggingFaceEmbeddings(
            model_name=str(model_path), model_kwargs={"device": "cpu", "local_files_only": True}
        )
        self.embeddings.embed_documents(["warm up"])
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

    def __init__(self, model_path: Path, threads: int = 2) -> None:
        import torch
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        torch.set_num_threads(threads)
        self.embed_model = HuggingFaceEmbedding(model_name=str(model_path), device="cpu")
        self.embed_model.get_text_embedding("warm up")
        self.index: Any = None

    def ingest(self, folder: Path) -> dict[str, float]:
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
        from llama_index.core.node_parser import SentenceSplitter

        t = time.perf_counter()
        documents = SimpleDirectoryReader(str(folder)).load_data()
        self.index = VectorStoreIndex.from_documents(
            documents, transformations=[SentenceSplitter()], embed_model=self.embed_model
        )
        return {
            "docs": len(documents),
            "chunks": len(self.index.docstore.docs),
            "seconds": time.perf_counter() - t,
        }

    def search(self, question: str, k: int) -> list[str]:
        nodes = self.index.as_retriever(similarity_top_k=k).retrieve(question)
        return [n.node.metadata.get("file_name", "") for n in nodes]
