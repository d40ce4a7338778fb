"""Options shared by several commands, so that each is spelled and explained once."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from appliance.commands.output import fail
from appliance.vectorstore.base import SearchMode

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Knowledge base (collection).")]
UserOpt = Annotated[
    str | None, typer.Option("--user", help="Act as this user (default: local administrator).")
]

SEARCH_MODES = ("hybrid", "dense", "bm25")


def check_mode(mode: str) -> SearchMode:
    """``--mode`` of `search` and `eval`: the retrieval to run (dense and bm25 alone for ablations)."""
    if mode not in SEARCH_MODES:
        fail(f"--mode must be hybrid, dense or bm25, not {mode!r}", 2)
    return cast(SearchMode, mode)
