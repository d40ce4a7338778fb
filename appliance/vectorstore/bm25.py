"""BM25 as sparse vectors, computed here so every adapter scores keywords the same way.

Qdrant's own BM25 inference (``models.Document``) needs fastembed and a download, and the full-text
index scoring of Qdrant Edge has no counterpart in qdrant-client's local mode. So we encode BM25
ourselves and let each store do only what all of them can: a sparse dot product with the ``idf``
modifier, which makes the store multiply every query term by its inverse document frequency over
the collection. Documents carry the BM25 term-frequency part, queries carry 1.0 per term, so
``score = sum(idf(t) * tf_part(t, d))``: BM25, with the same numbers in Edge, server and local mode.

The tokenizer is multilingual: words of alphabetic scripts are lower-cased (after NFKC), runs of
CJK characters become character unigrams and bigrams, the usual way to search Chinese or Japanese
without a dictionary segmenter; a bigram matches a two-character word exactly, unigrams keep recall.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass

K1 = 1.2
B = 0.75
# A fixed average document length, as fastembed's BM25 does: the store cannot tell us the live
# average, and chunks are bounded in length anyway, so the length normalisation stays meaningful.
AVG_LEN = 128.0

_CJK = (
    r"\u3040-\u30ff"  # Hiragana, Katakana
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    r"\uac00-\ud7af"  # Hangul syllables
)
_TOKEN = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)", re.UNICODE)

# Function words carry no evidence in a question and would only add noise to the sum.
STOPWORDS = frozenset(
    """a an and are as at be been by can could did do does for from had has have how i if in into is
    it its me my of on or our should so than that the their them then there these they this to was
    we were what when where which who whom why will with would you your""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


def _light_stem(word: str) -> str:
    # Plural and simple verb endings only: enough for "drills"/"drill", without a stemmer dependency.
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Search terms of ``text``: stemmed lower-case words and CJK unigrams + bigrams."""
    out: list[str] = []
    for cjk, word in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if cjk:
            out.extend(cjk)
            out.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
        elif word not in STOPWORDS:
            out.append(_light_stem(word))
    return out


def term_id(term: str) -> int:
    """A stable 32-bit id (sparse indices are u32); collisions are rare enough to ignore at 2^32."""
    return zlib.crc32(term.encode("utf-8"))


def _merge(weights: dict[int, float]) -> SparseVector:
    indices = sorted(weights)
    return SparseVector(indices, [weights[i] for i in indices])


def encode_document(text: str) -> SparseVector:
    """The term-frequency half of BM25; the store's ``idf`` modifier supplies the other half."""
    terms = Counter(tokenize(text))
    length = sum(terms.values())
    norm = K1 * (1 - B + B * length / AVG_LEN)
    weights: dict[int, float] = {}
    for term, tf in terms.items():
        tid = term_id(term)
        weights[tid] = weights.get(tid, 0.0) + tf * (K1 + 1) / (tf + norm)
    return _merge(weights)


def encode_query(text: str) -> SparseVector:
    return _merge({term_id(t): 1.0 for t in set(tokenize(text))})
