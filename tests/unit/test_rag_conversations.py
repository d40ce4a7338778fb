"""Conversations, answers and feedback in the metadata DB: per user, paginated, 404 for others."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.db import make_engine
from appliance.domain import NotFound
from appliance.rag.conversations import ConversationStore, new_id


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(make_engine(tmp_path / "m.db"))


def answer(cid: str | None, question: str, text: str = "An answer [1].") -> dict:
    return {
        "id": new_id(),
        "conversation_id": cid,
        "collection": "default",
        "question": question,
        "query": question,
        "answer": text,
        "citations": [{"index": 1, "uri": "/x"}],
        "support": 0.9,
        "mode": "grounded",
        "fallback": False,
        "model": "m",
    }


def test_turns_append_and_the_first_question_titles_the_conversation(store: ConversationStore) -> None:
    conv = store.create("alice")
    first, second = answer(conv["id"], "What is the X-200?"), answer(conv["id"], "And its warranty?")
    store.record("alice", first)
    store.record("alice", second)
    got = store.get(conv["id"], "alice")
    assert got["title"] == "What is the X-200?" and got["turns"] == 2
    turns = store.turns(conv["id"], "alice")
    assert [t["id"] for t in turns.items] == [first["id"], second["id"]] and turns.total == 2
    assert turns.items[0]["citations"] == [{"index": 1, "uri": "/x"}]
    assert store.history(conv["id"], "alice", turns=1) == [
        {"role": "user", "content": "And its warranty?"},
        {"role": "assistant", "content": "An answer [1]."},
    ]


def test_another_users_conversation_is_not_found(store: ConversationStore) -> None:
    conv = store.create("alice", "mine")
    for call in (
        lambda: store.get(conv["id"], "bob"),
        lambda: store.turns(conv["id"], "bob"),
        lambda: store.history(conv["id"], "bob"),
        lambda: store.rename(conv["id"], "bob", "x"),
        lambda: store.delete(conv["id"], "bob"),
    ):
        with pytest.raises(NotFound):
            call()
    assert store.get(conv["id"], "alice")["title"] == "mine"
    assert store.list("bob").total == 0


def test_list_is_paginated_latest_first_and_rename_delete_work(store: ConversationStore) -> None:
    ids = [store.create("alice", f"c{i}")["id"] for i in range(5)]
    store.record("alice", answer(ids[1], "bump"))  # a new turn moves c1 to the top
    page = store.list("alice", limit=2, offset=0)
    assert page.total == 5 and len(page.items) == 2 and page.items[0]["id"] == ids[1]
    assert page.items[0]["turns"] == 1
    rest = store.list("alice", limit=10, offset=2)
    assert len(rest.items) == 3 and not {i["id"] for i in rest.items} & {i["id"] for i in page.items}
    assert store.rename(ids[0], "alice", "renamed")["title"] == "renamed"
    rated = answer(ids[1], "q")
    store.record("alice", rated)
    store.add_feedback(rated["id"], "alice", "up", None)
    store.delete(ids[1], "alice")
    assert store.list("alice").total == 4
    with pytest.raises(NotFound):
        store.answer(rated["id"], "alice")
    assert store.list_feedback().total == 0  # feedback on deleted turns goes with them


def test_feedback_only_on_your_own_answers_and_listed_with_the_answer(store: ConversationStore) -> None:
    mine = answer(None, "Who approves travel?", "Ingrid Solberg [1].")
    store.record("alice", mine)
    with pytest.raises(NotFound):
        store.add_feedback(mine["id"], "bob", "up", None)
    with pytest.raises(NotFound):
        store.add_feedback("nope", "alice", "up", None)
    fb = store.add_feedback(mine["id"], "alice", "down", "wrong person")
    assert fb["rating"] == "down" and fb["comment"] == "wrong person"
    store.add_feedback(mine["id"], "alice", "up", None)
    listed = store.list_feedback(limit=1)
    assert listed.total == 2 and len(listed.items) == 1
    downs = store.list_feedback(rating="down").items
    assert len(downs) == 1 and downs[0]["answer"] == "Ingrid Solberg [1]." and downs[0]["support"] == 0.9


def test_a_withheld_answer_takes_the_rewritten_queries_with_it(tmp_path: Path) -> None:
    """With `rag.condense: llm` a follow-up's searched query is rewritten from earlier answers, so
    once an answer is withheld (its document is no longer readable), no turn shows its query."""
    from appliance.domain import Principal
    from appliance.ingestion.state import DocumentRecord, Ledger

    engine = make_engine(tmp_path / "m.db")
    store = ConversationStore(engine)
    secret = DocumentRecord(
        "doc-fin",
        "default",
        "s",
        "/fin.md",
        "Finance",
        "v",
        "h",
        ["group:finance"],
        ["c1"],
        None,
        "indexed",
        None,
    )
    Ledger(engine).commit_write(secret)
    conv = store.create("erin")
    first = answer(conv["id"], "What is the finance codename?", "It is FINCANARY7731 [1].")
    first["citations"] = [{"index": 1, "uri": "/fin.md", "document_id": "doc-fin", "cited": True}]
    follow = answer(conv["id"], "When does it launch?")
    follow["query"] = "When does FINCANARY7731 launch?"
    follow["citations"] = []
    store.record("erin", first)
    store.record("erin", follow)
    inside = Principal("erin", "employee", ("finance",))
    outside = Principal("erin", "employee", ())
    assert "FINCANARY7731" in str(store.turns(conv["id"], "erin", reader=inside).items)
    items = store.turns(conv["id"], "erin", reader=outside).items
    assert "FINCANARY7731" not in str(items)
    assert [t["query"] for t in items] == [t["question"] for t in items]


def test_feedback_carries_the_retrieved_chunks_and_takes_a_later_comment(store: ConversationStore) -> None:
    mine = answer(None, "Who approves travel?", "Ingrid Solberg [1].")
    mine["citations"] = [
        {"index": 1, "uri": "/x", "chunk_id": "c-1", "cited": True},
        {"index": 2, "uri": "/y", "chunk_id": "c-2", "cited": False},
    ]
    store.record("alice", mine)
    fb = store.add_feedback(mine["id"], "alice", "down", None)
    assert fb["chunks"] == ["c-1", "c-2"]  # what retrieval gave, cited or not, best first
    with pytest.raises(NotFound):
        store.comment_feedback(fb["id"], "bob", "not yours")
    store.comment_feedback(fb["id"], "alice", "  wrong person  ")
    listed = store.list_feedback(rating="down").items
    assert listed[0]["comment"] == "wrong person" and listed[0]["chunks"] == ["c-1", "c-2"]
