"""What every command prints: one JSON document or a human line on stdout, errors on stderr."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer


def emit(data: Any, as_json: bool, human: str) -> None:
    """Print ``data`` as one JSON document (``--json``) or the human-readable text."""
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else human)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and leave with ``code`` (2: bad usage or settings)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def citations_text(citations: list[dict[str, Any]]) -> str:
    """One line per citation, as `ask` and `search` print them."""
    out = []
    for c in citations:
        page = f" p.{c['page']}" if c.get("page") else ""
        out.append(f"[{c['index']}] {c['title']}{page}  {c['uri']}  (score {c['score']:.4f})")
    return "\n".join(out)
