from __future__ import annotations

from appliance.egress import is_allowed
from appliance.ingestion.chunking import split_to_tokens


def test_only_loopback_is_reachable_by_default() -> None:
    assert is_allowed(("127.0.0.1", 8000))
    assert is_allowed(("::1", 8000, 0, 0))
    assert is_allowed(("localhost", 80))
    assert not is_allowed(("8.8.8.8", 53))
    assert not is_allowed(("10.1.2.3", 443))
    assert not is_allowed(("pypi.org", 443))
    assert is_allowed("/run/some.sock")


def words(text: str) -> int:
    # a stand-in tokenizer: one token per whitespace word or CJK character, plus [CLS]/[SEP]
    count = sum(len(w) if any("\u4e00" <= ch <= "\u9fff" for ch in w) else 1 for w in text.split())
    return count + 2


def test_long_text_splits_under_the_limit_with_overlap() -> None:
    text = " ".join(f"Sentence number {i} talks about turbines." for i in range(60))
    pieces = split_to_tokens(text, words, limit=40, overlap_tokens=8)
    assert len(pieces) > 1
    assert all(words(p) <= 40 for p in pieces)
    assert "Sentence number 59" in pieces[-1]
    # overlap: each piece starts with the last sentence of the previous one
    assert pieces[1].split(".")[0] in pieces[0]


def test_unspaced_cjk_text_is_split() -> None:
    text = "保修期为七年。" * 30 + "风机" * 200
    pieces = split_to_tokens(text, words, limit=50)
    assert all(words(p) <= 50 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text
