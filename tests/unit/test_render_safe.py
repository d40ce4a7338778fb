"""appliance/rag/render.py: the one cleaner of text a reader sees. No Markdown image, link,
link definition or autolink survives (their words do), citation markers stay, prompt fences a
model echoes are removed, and an answer cleaned piece by piece while it streams comes out the
same as cleaned whole."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator

import pytest

from appliance.rag.prompts import FENCE_CLOSE, FENCE_OPEN, format_source
from appliance.rag.render import SafeStream, safe_markdown, safe_stream

HOSTILE = (
    "The gearbox oil is changed every 18 months [1]. ![beacon](http://127.0.0.1:9/b?q=secret) "
    "See [the manual](http://evil.example/x) or <https://evil.example/y>, and ![ref img][r] "
    "or [ref link][r] [2][3].\n[r]: http://evil.example/z\nDone."
)


def test_images_links_and_autolinks_lose_their_targets_and_keep_their_words() -> None:
    out = safe_markdown(HOSTILE)
    assert "http://127.0.0.1" not in out and "evil.example/x" not in out and "evil.example/z" not in out
    assert "](" not in out and "<https" not in out
    assert "beacon" in out and "the manual" in out and "ref img" in out and "ref link" in out
    assert "[1]" in out and "[2][3]" in out  # citation markers are not links
    assert out.endswith("Done.")


@pytest.mark.parametrize("n", [1, 3, 12])
def test_echoed_fences_are_removed_whole_or_cut(n: int) -> None:
    for echo in (
        FENCE_CLOSE.format(n=n),
        FENCE_OPEN.format(n=n),
        f"<<END SOURCE {n}>>",
        f"<<<SOURCE {n}",
        f"END SOURCE {n}>>>",
        f"<<<end source {n} >>>",
    ):
        out = safe_markdown(f"The oil is changed every 18 months [1]. {echo} It is synthetic [2].")
        assert "SOURCE" not in out.upper() and "<<" not in out and ">>" not in out, (echo, out)
        assert out.startswith("The oil is changed every 18 months [1].") and out.endswith("synthetic [2].")


def test_the_fence_format_is_the_one_the_prompt_uses() -> None:
    from appliance.domain import Chunk, ScoredChunk

    chunk = Chunk("c1", "d1", "default", "file:///m.md", "Manual", "The oil is synthetic.", 0)
    fenced = format_source(4, ScoredChunk(chunk=chunk, score=1.0))
    assert safe_markdown(fenced).strip().splitlines() == ["Manual", "The oil is synthetic."]


def test_ordinary_text_is_left_alone() -> None:
    text = "If x << y >> z then a <b> tag, [a bracket] alone, a bang! and 2 > 1 [1].\n  Indented."
    assert safe_markdown(text) == text


REALISTIC = [
    HOSTILE,
    "Answer: the X-200 uses synthetic oil [1]. <<<END SOURCE 1>>>\n<<<SOURCE 2>>> Manual\nIt is changed yearly [2].",
    "Wow! [x]: not a definition\n  [d]: http://y \n![i][r] end! END SOURCE 2>>> ok",
]


def _pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, min(40, len(text) - 1))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("text", REALISTIC)
def test_a_streamed_answer_is_cleaned_as_the_whole_would_be(text: str) -> None:
    rng = random.Random(7)
    whole = safe_markdown(text)
    for _ in range(500):
        pieces = _pieces(text, rng)
        cleaner = SafeStream()
        streamed = "".join(cleaner.feed(p) for p in pieces) + cleaner.flush()
        assert streamed == whole, pieces
    # A piece that cannot grow into anything is passed on at once, not held to the end.
    assert SafeStream().feed("The oil is synthetic [1]. It ") == "The oil is synthetic [1]. It "


def test_safe_stream_closes_its_source_when_closed() -> None:
    closed = []

    async def tokens() -> AsyncGenerator[str, None]:
        try:
            for piece in ["The oil ", "![x](http://e/", ") is synthetic", " [1]."]:
                yield piece
            yield "never read"
        finally:
            closed.append(True)

    async def read_three() -> list[str]:
        out = []
        gen = safe_stream(tokens())
        async for piece in gen:
            out.append(piece)
            if len("".join(out)) >= len("The oil x is synthetic"):
                break
        await gen.aclose()
        return out

    got = asyncio.run(read_three())
    assert "".join(got).startswith("The oil x is synthetic") and "http" not in "".join(got)
    assert closed == [True]
