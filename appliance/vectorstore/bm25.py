"""BM25 as sparse vectors, computed here so every adapter scores keywords the same way.

Qdrant's own BM25 inference (``models.Document``) needs fastembed and a download, and the full-text
index scoring of Qdrant Edge has no counterpart in qdrant-client's local mode. So we encode BM25
ourselves and let each store do only what all of them can: a sparse dot product with the ``idf``
modifier, which makes the store multiply every query term by its inverse document frequency over
the collection. Documents carry the BM25 term-frequency part, queries carry 1.0 per term, so
``score = sum(idf(t) * tf_part(t, d))``: BM25, with the same numbers in Edge, server and local mode.

Words of alphabetic scripts are lower-cased (after NFKC) and lightly stemmed. Runs of CJK
characters depend on the tokenizer version, which a collection keeps for its whole life (its
sparse vector is named after it, see ``hybrid.py``), because query and document terms must agree:

- version 1: character unigrams and bigrams, the dictionary-free way to search Chinese.
- version 2: Chinese words from ``jieba``'s segmenter in search mode (a long word and the shorter
  words inside it), plus character bigrams, which keep recall when the segmenter cuts a question
  and a document differently ("智算中心里" vs "智算中心"); Chinese function words are dropped.
  Japanese kana and Korean hangul keep the unigrams and bigrams of version 1.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

K1 = 1.2
B = 0.75
# A fixed average document length, as fastembed's BM25 does: the store cannot tell us the live
# average, and chunks are bounded in length anyway, so the length normalisation stays meaningful.
AVG_LEN = 128.0
# The tokenizer new collections get; older collections keep the version they were built with.
TOKENIZER_VERSION = 2
TOKENIZER_VERSIONS = (1, 2)

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = (
    r"\u3040-\u30ff"  # Hiragana, Katakana
    + _HAN  # CJK ideographs
    + r"\uac00-\ud7af"  # Hangul syllables
)
_TOKEN = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)", re.UNICODE)
_HAN_RUN = re.compile(rf"[{_HAN}]+")

# Function words carry no evidence in a question and would only add noise to the sum.
STOPWORDS = frozenset(
    """a an and are as at be been by can could did do does for from had has have how i if in into is
    it its me my of on or our should so than that the their them then there these they this to was
    we were what when where which who whom why will with would you your""".split()  # noqa: SIM905
)
# The Chinese counterparts, as jieba cuts them: particles, pronouns and question words. Content
# words stay even when frequent ("公司"): the store's IDF already weighs them down.
ZH_STOPWORDS = frozenset(
    """的 了 是 在 和 与 及 或 也 都 就 而 并 被 把 将 对 从 向 于 以 之 其 这 那 这个 那个 这些 那些
    我 你 他 她 它 我们 你们 他们 吗 呢 吧 啊 呀 么 什么 多少 哪 哪个 哪些 哪里 怎么 怎样 怎么样
    如何 为什么 为何 几 是否 有没有 是不是 请问 一下 要 会 能 可以 需要 应该 有 个 等""".split()  # noqa: SIM905
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


def _bigrams(run: str) -> list[str]:
    return [run[i : i + 2] for i in range(len(run) - 1)]


_segmenter_lock = threading.Lock()
_segmenter_instance: Any = None


def _segmenter() -> Any:
    """jieba's tokenizer, built once on first use: loading its dictionary takes most of a second,
    which a collection without Chinese never pays. The dictionary ships inside the wheel; the
    prefix cache built from it on the first load goes to the temp folder, so later processes
    start faster."""
    global _segmenter_instance
    if _segmenter_instance is None:
        with _segmenter_lock:
            if _segmenter_instance is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)  # it announces every dictionary load on stderr
                tokenizer = jieba.Tokenizer()
                tokenizer.tmp_dir = tempfile.gettempdir()
                tokenizer.initialize()
                _segmenter_instance = tokenizer
    return _segmenter_instance


def _han_words(run: str) -> list[str]:
    words = [w for w in _segmenter().cut_for_search(run, HMM=True) if w not in ZH_STOPWORDS]
    return words + [b for b in _bigrams(run) if b not in ZH_STOPWORDS]


def tokenize(text: str, version: int = TOKENIZER_VERSION) -> list[str]:
    """Search terms of ``text`` under tokenizer ``version`` (see the module docstring)."""
    out: list[str] = []
    for cjk, word in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if not cjk:
            if word not in STOPWORDS:
                out.append(_light_stem(word))
        elif version == 1:
            out.extend(_grams(cjk))
        else:
            out.extend(_cjk_terms(cjk))
    return out


def _cjk_terms(run: str) -> list[str]:
    out: list[str] = []
    start = 0
    for han in _HAN_RUN.finditer(run):
        out.extend(_grams(run[start : han.start()]))  # kana or hangul before this Chinese run
        out.extend(_han_words(han.group()))
        start = han.end()
    out.extend(_grams(run[start:]))
    return out


def _grams(run: str) -> list[str]:
    return [*run, *_bigrams(run)]


def term_id(term: str) -> int:
    """A stable 32-bit id (sparse indices are u32); collisions are rare enough to ignore at 2^32."""
    return zlib.crc32(term.encode("utf-8"))


def _merge(weights: dict[int, float]) -> SparseVector:
    indices = sorted(weights)
    return SparseVector(indices, [weights[i] for i in indices])


def encode_document(text: str, version: int = TOKENIZER_VERSION) -> SparseVector:
    """The term-frequency half of BM25; the store's ``idf`` modifier supplies the other half."""
    terms = Counter(tokenize(text, version))
    length = sum(terms.values())
    norm = K1 * (1 - B + B * length / AVG_LEN)
    weights: dict[int, float] = {}
    for term, tf in terms.items():
        tid = term_id(term)
        weights[tid] = weights.get(tid, 0.0) + tf * (K1 + 1) / (tf + norm)
    return _merge(weights)


def encode_query(text: str, version: int = TOKENIZER_VERSION) -> SparseVector:
    return _merge({term_id(t): 1.0 for t in set(tokenize(text, version))})
