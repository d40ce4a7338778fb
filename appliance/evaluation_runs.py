"""One evaluation run as ``POST /api/v1/eval`` and the console's Quality page both make it: the
question set (inline, or stored as ``<data dir>/eval/sets/<set>.jsonl``), retrieval as the caller,
answers when asked, the report written to ``<data dir>/eval/<date>-<name>.json`` and gated on a
baseline (``appliance.evaluation.run``). The console's "previous run" is the newest result file of
the same set that measured the same thing (``previous_result``), passed as that baseline.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.domain import InvalidRequest, NotFound, Principal
from appliance.evaluation import QAItem, load_qa, run
from appliance.rag.pipeline import RagService, citation_dicts
from appliance.rag.search import SearchService
from appliance.vectorstore.base import SearchMode

SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as EvalRequest's `set` and `name`


def eval_dir(data_dir: Path) -> Path:
    return data_dir / "eval"


def stored_sets(data_dir: Path) -> list[str]:
    """The names of the sets in ``<data dir>/eval/sets/`` (what ``set`` may name)."""
    folder = eval_dir(data_dir) / "sets"
    return sorted(p.stem for p in folder.glob("*.jsonl") if SET_NAME.match(p.stem)) if folder.is_dir() else []


def stored_set(data_dir: Path, name: str) -> list[QAItem]:
    path = eval_dir(data_dir) / "sets" / f"{name}.jsonl"
    if not SET_NAME.match(name) or not path.is_file():
        raise NotFound(f"no eval set {name!r} (sets are <data dir>/eval/sets/<set>.jsonl)")
    return load_qa(path)


def run_name(text: str) -> str:
    """A result file's name from a file name or a title: the characters ``name`` allows."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:64]
    return cleaned if cleaned and SET_NAME.match(cleaned) else "inline"


def previous_result(
    data_dir: Path, name: str, k: int, mode: str, questions: int
) -> tuple[dict[str, Any], Path] | None:
    """The newest result file of set ``name`` measured with the same k, mode and number of
    questions (one measured otherwise is not comparable: the gate refuses it), with its path."""
    folder = eval_dir(data_dir)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob(f"*-{name}.json") if p.name[:10].count("-") == 2]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and data.get("set") == name
            and (data.get("k"), data.get("mode"), data.get("questions")) == (k, mode, questions)
        ):
            return data, path
    return None


async def run_eval(
    search: SearchService,
    rag: RagService | None,
    principal: Principal,
    data_dir: Path,
    items: Sequence[QAItem],
    name: str,
    collection: str,
    k: int = 5,
    mode: SearchMode = "hybrid",
    generate: bool = False,
    baseline: dict[str, Any] | None = None,
    max_drop: float = 0.02,
    baseline_source: str = "inline",
) -> dict[str, Any]:
    """Judge retrieval (and, with ``generate``, answers through ``rag``) as ``principal``; the
    result as :func:`appliance.evaluation.run` returns it (``result_file``, and ``gate`` when a
    ``baseline`` is given). Must be awaited on the event loop that ``rag`` answers on."""
    if generate and rag is None:
        raise InvalidRequest("answers need the answering service")
    loop = asyncio.get_running_loop()

    # Runs in a worker thread (retrieval and embedding are blocking); answers go back to the loop.
    def judge(question: str, n: int) -> list[dict[str, Any]]:
        hits, _ = search.search(question, principal, collection, n, None, mode)
        return citation_dicts(hits)

    def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
        assert rag is not None
        answer = asyncio.run_coroutine_threadsafe(rag.ask(question, principal, collection=collection), loop)
        result = answer.result()
        return result.answer, result.citations

    return await asyncio.to_thread(
        run,
        items,
        judge,
        k,
        ask if generate else None,
        mode,
        name,
        eval_dir(data_dir),
        baseline,
        baseline_source,
        max_drop,
    )
