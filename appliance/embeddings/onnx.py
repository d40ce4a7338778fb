"""onnxruntime embedder: the configured sentence-transformers model, exported once to ONNX.

The export runs offline from the local model folder (torch is already installed for it) and is
cached under the data dir, keyed by a fingerprint of the model files, so later starts load only
onnxruntime and the tokenizer. A copy in the per-user cache lets a new data dir skip the export. Pooling and normalisation follow the model's own sentence-transformers
config (``modules.json``, ``1_Pooling/config.json``), so both backends produce the same vectors.

int8 dynamic quantisation is used only after it agrees with fp32 (cosine >= ``MIN_INT8_COSINE``
on a fixed sample, trying ``PLANS`` from most to least aggressive); the verdict is stored beside
the export so it is measured once. Dynamic quantisation scales activations per batch, so an int8
vector moves slightly (cosine > 0.995) with the texts it is batched with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from appliance.domain import ModelNotFound

log = logging.getLogger(__name__)

MIN_INT8_COSINE = 0.99
EXPORT_VERSION = 2  # bump when the export procedure changes, so old caches are not reused

# Agreement sample for the int8 check: short and long, English, Chinese, mixed, numbers and codes.
SAMPLE = [
    "How many days of paid annual leave do employees get?",
    "Invoices above 10,000 EUR require a second approval by the Chief Financial Officer.",
    "Press and hold the reset button for 10 seconds until the status LED blinks orange.",
    "员工迟到超过三十分钟，按半天事假处理。",
    "所有差旅费用都通过 SAP Concur 系统提交报销 (expense report)。",
    "Error E07: the label roll is empty or not inserted correctly.",
    "The backup generator is load-tested every Tuesday at 06:00 for forty minutes. " * 6,
    "ok",
    "VPN?",
    "年假",
    "How do I reset the router?",
]


def fingerprint(model_dir: Path) -> str:
    """Changes whenever the model files do: names, sizes and the small config files' contents."""
    h = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if rel.startswith("onnx/") or rel.startswith("."):
            continue
        h.update(f"{rel}\0{path.stat().st_size}\0".encode())
        if path.suffix == ".json":
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _pooling_config(model_dir: Path) -> tuple[str, bool]:
    """The pooling mode and whether vectors are normalised, as the model's modules say."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = json.loads(modules_file.read_text())
    mode, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            cfg_file = model_dir / module.get("path", "") / "config.json"
            cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
        elif kind.endswith("Normalize"):
            normalize = True
    return mode, normalize


def _max_seq_length(model_dir: Path) -> int:
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text()).get("max_seq_length", 512))
    return 512


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the transformer of a sentence-transformers folder to ``target`` (token embeddings out)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    dummy = torch.ones((2, 16), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            TokenEmbeddings(model),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "token_embeddings": axes,
            },
            opset_version=17,
            # The TorchScript exporter needs nothing beyond torch; the dynamo one needs onnxscript.
            dynamo=False,
        )


# Quantisation plans, most aggressive first; the first whose vectors agree with fp32 is kept.
# Feed-forward layers see GELU outliers and are the first to lose accuracy in int8, so the fallbacks
# keep their down-projections (``layer.N/output/dense``), then all of them, in fp32.
PLANS: list[tuple[str, str | None]] = [
    ("all", None),
    ("keep-ffn-down", r"layer\.\d+/output/dense/"),
    ("keep-ffn", r"layer\.\d+/(output|intermediate)/dense/"),
]


def quantize_int8(source: Path, target: Path, keep_fp32: str | None = None) -> None:
    """Dynamic int8 quantisation of the weight matrices, per output channel; MatMul nodes whose
    name matches ``keep_fp32`` stay fp32. Unsigned weights: signed int8 saturates in the AVX2
    kernels without VNNI (cosine ~0.8 against fp32 on this model)."""
    import re

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    excluded = [
        n.name
        for n in graph.node
        if keep_fp32 and n.op_type == "MatMul" and re.search(keep_fp32, n.name + "/")
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs every tensor at INFO on root
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
        )
    finally:
        root.setLevel(level)


def shared_cache_dir() -> Path:
    """A per-user cache the data dirs of one machine share (like pip's), so a new data dir copies
    an export instead of redoing it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kb-appliance" / "onnx"


def _rename(staging: Path, folder: Path) -> None:
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / "manifest.json").is_file():
            raise
        # Another process finished the same export first; theirs is as good as ours.


def _publish(staging: Path, shared: Path) -> None:
    """Best effort: offer the export to other data dirs of this user (a read-only home is fine)."""
    tmp = shared.with_name(f"{shared.name}.partial-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(staging, tmp)
        _rename(tmp, shared)
    except OSError as exc:
        log.debug("could not share the ONNX export in %s: %s", shared.parent, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OnnxEmbedder:
    def __init__(
        self,
        name: str,
        path: Path,
        cache_dir: Path,
        quantize: Literal["none", "int8"] = "int8",
        threads: int = 2,
        batch_size: int = 32,
    ) -> None:
        self.name = name
        self.path = path
        self.cache_dir = cache_dir
        self.quantize = quantize
        self.threads = threads
        self.batch_size = batch_size
        self.dim = 0
        self.max_tokens = 0
        self.variant = ""  # "fp32" or "int8" once started
        self.int8_min_cosine: float | None = None
        self._session: Any = None
        self._tokenizer: Any = None  # truncates at max_tokens
        self._counter: Any = None  # never truncates, for count_tokens
        self._pooling = ("mean", True)
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            from tokenizers import Tokenizer

            tokenizer_file = self.path / "tokenizer.json"
            if not tokenizer_file.is_file():
                raise ModelNotFound(
                    f"{self.path} has no tokenizer.json; the onnx backend needs a fast tokenizer"
                )
            self.max_tokens = _max_seq_length(self.path)
            self._pooling = _pooling_config(self.path)
            self._counter = Tokenizer.from_file(str(tokenizer_file))
            self._counter.no_truncation()
            self._counter.no_padding()
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
            self._tokenizer.enable_truncation(max_length=self.max_tokens)
            self._tokenizer.no_padding()
            folder = self._ensure_export()
            manifest = json.loads((folder / "manifest.json").read_text())
            self.int8_min_cosine = manifest.get("int8_min_cosine")
            use_int8 = self.quantize == "int8" and manifest.get("int8_ok", False)
            if self.quantize == "int8" and not use_int8:
                log.warning(
                    "int8 embeddings disagree with fp32 (min cosine %s < %s); using fp32",
                    self.int8_min_cosine,
                    MIN_INT8_COSINE,
                )
            self.variant = "int8" if use_int8 else "fp32"
            self._session = self._open(folder / f"model.{self.variant}.onnx")
            self.dim = int(self._run(["dimension probe"]).shape[1])

    def _open(self, model_file: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: on a shared 2-core box spinning threads steal
        # the CPU from each other (a query took 32 ms spinning vs 13 ms not, under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def _ensure_export(self) -> Path:
        name = f"{self.name}-{fingerprint(self.path)}"
        folder = self.cache_dir / name
        if (folder / "manifest.json").is_file():
            return folder
        shared = shared_cache_dir() / name
        staging = folder.with_name(f"{name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            if (shared / "manifest.json").is_file():
                log.info("copying the ONNX export of %s from %s", self.path, shared)
                shutil.copytree(shared, staging)
            else:
                log.info("exporting %s to ONNX under %s (once)", self.path, folder)
                staging.mkdir(parents=True)
                self._export(staging)
                _publish(staging, shared)
            _rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _export(self, staging: Path) -> None:
        """fp32 export, then the first int8 plan that agrees with it; the verdict goes in the manifest."""
        export_onnx(self.path, staging / "model.fp32.onnx")
        manifest: dict[str, Any] = {"source": str(self.path), "int8_ok": False, "int8_trials": {}}
        best = -1.0
        for plan, keep in PLANS:
            quantize_int8(staging / "model.fp32.onnx", staging / "model.int8.onnx", keep)
            min_cos = self._agreement(staging)
            manifest["int8_trials"][plan] = round(min_cos, 6)
            best = max(best, min_cos)
            if min_cos >= MIN_INT8_COSINE:
                manifest.update(int8_ok=True, int8_plan=plan)
                break
            log.info("int8 plan %r: min cosine %.4f < %s against fp32", plan, min_cos, MIN_INT8_COSINE)
        else:
            (staging / "model.int8.onnx").unlink(missing_ok=True)
        manifest["int8_min_cosine"] = round(min_cos if manifest["int8_ok"] else best, 6)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def _agreement(self, folder: Path) -> float:
        """Lowest cosine between fp32 and int8 vectors of the sample."""
        fp32 = self._embed_with(self._open(folder / "model.fp32.onnx"), SAMPLE)
        int8 = self._embed_with(self._open(folder / "model.int8.onnx"), SAMPLE)
        return float(np.min(np.sum(fp32 * int8, axis=1)))

    def close(self) -> None:
        with self._lock:
            self._session = None

    # -- embedding -------------------------------------------------------------------------------

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed_with(self._session, texts)

    def _embed_with(self, session: Any, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        # Sorted by length, each batch pads only to its own longest text.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        parts: dict[int, np.ndarray] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            (tokens,) = session.run(
                ["token_embeddings"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            pooled = self._pool(tokens, mask)
            for row, i in enumerate(idx):
                parts[i] = pooled[row]
        return np.stack([parts[i] for i in range(len(texts))]).astype(np.float32)

    def _pool(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mode, normalize = self._pooling
        m = mask[..., None].astype(np.float32)
        if mode == "cls":
            pooled = tokens[:, 0]
        elif mode == "max":
            pooled = np.where(m > 0, tokens, -1e9).max(axis=1)
        else:
            pooled = (tokens * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled

    def embed_documents(self, texts: Sequence[str], threads: int | None = None) -> np.ndarray:
        # ``threads`` is a hint for torch; an onnxruntime session keeps the count it was built with.
        if self._session is None:
            self.start()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            self.start()
        # Special tokens ([CLS], [SEP]) count against the model's limit too.
        return len(self._counter.encode(text).ids)
