"""Conversations, answers and feedback, per user, in the metadata DB.

Every answer gets an id and a row (feedback points at it); an answer given inside a conversation is
a turn of it. Another user's conversation or answer is reported as missing (404), never as
forbidden, so ids do not leak whether they exist.

A stored turn keeps its citations with their chunk text, and its answer may quote them. Access
can be lost after the answer was given (a group left, an ACL narrowed, a document deleted, a key
scoped to other collections), so turns handed back to a ``reader`` are filtered by what the reader
may read NOW: citations of other documents are dropped, and an answer that cited one is withheld.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, select, update

from appliance.db import answers, conversations, documents, feedback, now
from appliance.domain import NotFound, Principal, document_id
from appliance.security.acl import can_read

Rating = Literal["up", "down"]
WITHHELD = "[withheld: this answer cited documents you may no longer read]"


def new_id() -> str:
    return uuid.uuid4().hex


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "limit": self.limit, "offset": self.offset}


class ConversationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- conversations ---------------------------------------------------------------------------

    def create(self, user: str, title: str = "", collection: str | None = None) -> dict[str, Any]:
        cid, stamp = new_id(), now()
        row = {
            "id": cid,
            "user": user,
            "title": title.strip()[:200],
            "collection": collection,
            "created_at": stamp,
            "updated_at": stamp,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(conversations).values(**row))
        return self._conversation(row, 0)

    @staticmethod
    def _conversation(m: Any, turns: int) -> dict[str, Any]:
        return {
            "id": m["id"],
            "title": m["title"],
            "collection": m["collection"],
            "created_at": _iso(m["created_at"]),
            "updated_at": _iso(m["updated_at"]),
            "turns": turns,
        }

    def _owned(self, conn: Any, conversation_id: str, user: str) -> Any:
        row = conn.execute(
            select(conversations).where(conversations.c.id == conversation_id, conversations.c.user == user)
        ).first()
        if row is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return row._mapping

    def get(self, conversation_id: str, user: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            m = self._owned(conn, conversation_id, user)
            turns = conn.execute(
                select(func.count()).select_from(answers).where(answers.c.conversation_id == conversation_id)
            ).scalar_one()
        return self._conversation(m, int(turns))

    def list(self, user: str, limit: int = 20, offset: int = 0) -> Page:
        turns = (
            select(answers.c.conversation_id, func.count().label("n"))
            .group_by(answers.c.conversation_id)
            .subquery()
        )
        query = (
            select(conversations, func.coalesce(turns.c.n, 0).label("n"))
            .outerjoin(turns, turns.c.conversation_id == conversations.c.id)
            .where(conversations.c.user == user)
            .order_by(conversations.c.updated_at.desc(), conversations.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(conversations).where(conversations.c.user == user)
            ).scalar_one()
            rows = conn.execute(query).all()
        items = [self._conversation(r._mapping, int(r._mapping["n"])) for r in rows]
        return Page(items, int(total), limit, offset)

    def rename(self, conversation_id: str, user: str, title: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._owned(conn, conversation_id, user)
            conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(title=title.strip()[:200], updated_at=now())
            )
        return self.get(conversation_id, user)

    def delete(self, conversation_id: str, user: str) -> None:
        with self.engine.begin() as conn:
            self._owned(conn, conversation_id, user)
            ids = select(answers.c.id).where(answers.c.conversation_id == conversation_id)
            conn.execute(delete(feedback).where(feedback.c.answer_id.in_(ids)))
            conn.execute(delete(answers).where(answers.c.conversation_id == conversation_id))
            conn.execute(delete(conversations).where(conversations.c.id == conversation_id))

    def turns(
        self,
        conversation_id: str,
        user: str,
        limit: int = 50,
        offset: int = 0,
        reader: Principal | None = None,
    ) -> Page:
        """The turns, oldest first. With ``reader`` (the API always passes the caller), filtered by
        what the reader may read now; without, as stored."""
        with self.engine.connect() as conn:
            self._owned(conn, conversation_id, user)
            where = answers.c.conversation_id == conversation_id
            total = conn.execute(select(func.count()).select_from(answers).where(where)).scalar_one()
            rows = conn.execute(
                select(answers)
                .where(where)
                .order_by(answers.c.created_at, answers.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
            items = [self._answer(r._mapping) for r in rows]
            if reader is not None:
                items = _readable_now(conn, items, [r.collection for r in rows], reader)
        return Page(items, int(total), limit, offset)

    def history(
        self, conversation_id: str, user: str, turns: int = 3, reader: Principal | None = None
    ) -> builtins.list[dict[str, str]]:
        """The last turns as chat messages, oldest first (for condensing a follow-up). With
        ``reader``, an answer that cited what the reader may no longer read is withheld, so it
        does not reach the model's prompt either."""
        with self.engine.connect() as conn:
            self._owned(conn, conversation_id, user)
            rows = conn.execute(
                select(answers)
                .where(answers.c.conversation_id == conversation_id)
                .order_by(answers.c.created_at.desc(), answers.c.id.desc())
                .limit(turns)
            ).all()
            rows = list(reversed(rows))
            items = [self._answer(r._mapping) for r in rows]
            if reader is not None:
                items = _readable_now(conn, items, [r.collection for r in rows], reader)
        out: list[dict[str, str]] = []
        for item in items:
            out += [
                {"role": "user", "content": item["question"]},
                {"role": "assistant", "content": item["answer"]},
            ]
        return out

    # -- answers ---------------------------------------------------------------------------------

    @staticmethod
    def _answer(m: Any) -> dict[str, Any]:
        return {
            "id": m["id"],
            "conversation_id": m["conversation_id"],
            "question": m["question"],
            "query": m["query"],
            "answer": m["answer"],
            "citations": m["citations"] or [],
            "support": m["support"],
            "mode": m["mode"],
            "fallback": bool(m["fallback"]),
            "model": m["model"],
            "created_at": _iso(m["created_at"]),
        }

    def record(self, user: str, row: dict[str, Any]) -> None:
        """Store an answer; a turn of its conversation when it names one (whose title it may set)."""
        stamp = now()
        with self.engine.begin() as conn:
            conn.execute(insert(answers).values(user=user, created_at=stamp, **row))
            cid = row.get("conversation_id")
            if cid:
                conn.execute(update(conversations).where(conversations.c.id == cid).values(updated_at=stamp))
                conn.execute(
                    update(conversations)
                    .where(conversations.c.id == cid, conversations.c.title == "")
                    .values(title=row["question"].strip()[:80])
                )

    def answer(self, answer_id: str, user: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(answers).where(answers.c.id == answer_id, answers.c.user == user)
            ).first()
        if row is None:
            raise NotFound(f"answer {answer_id!r} not found")
        return self._answer(row._mapping)

    # -- feedback --------------------------------------------------------------------------------

    def add_feedback(self, answer_id: str, user: str, rating: Rating, comment: str | None) -> dict[str, Any]:
        """Rate one of ``user``'s answers. The answer row keeps the chunks retrieved for it, so the
        feedback carries them (``chunks``): a curator sees what the retrieval gave the model."""
        rated = self.answer(answer_id, user)  # only the asker rates an answer
        stamp = now()
        with self.engine.begin() as conn:
            key = conn.execute(
                insert(feedback).values(
                    answer_id=answer_id, user=user, rating=rating, comment=comment, created_at=stamp
                )
            ).inserted_primary_key
        assert key is not None
        fid = key[0]
        return {
            "id": int(fid),
            "answer_id": answer_id,
            "user": user,
            "rating": rating,
            "comment": comment,
            "created_at": _iso(stamp),
            "chunks": _chunk_ids(rated["citations"]),
        }

    def comment_feedback(self, feedback_id: int, user: str, comment: str) -> None:
        """Add a comment to feedback ``user`` gave (the chat rates at the click, the comment may
        follow). Someone else's feedback is reported as missing."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(feedback)
                .where(feedback.c.id == feedback_id, feedback.c.user == user)
                .values(comment=comment.strip()[:4000] or None)
            ).rowcount
        if not done:
            raise NotFound(f"feedback {feedback_id} not found")

    def list_feedback(self, limit: int = 50, offset: int = 0, rating: Rating | None = None) -> Page:
        where = [feedback.c.rating == rating] if rating else []
        query = (
            select(
                feedback,
                answers.c.question,
                answers.c.answer,
                answers.c.support,
                answers.c.mode,
                answers.c.citations,
            )
            .outerjoin(answers, answers.c.id == feedback.c.answer_id)
            .where(*where)
            .order_by(feedback.c.created_at.desc(), feedback.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(feedback).where(*where)).scalar_one()
            rows = conn.execute(query).all()
        items = [
            {
                "id": r.id,
                "answer_id": r.answer_id,
                "user": r.user,
                "rating": r.rating,
                "comment": r.comment,
                "created_at": _iso(r.created_at),
                "question": r.question,
                "answer": r.answer,
                "support": r.support,
                "mode": r.mode,
                "chunks": _chunk_ids(r.citations or []),
            }
            for r in rows
        ]
        return Page(items, int(total), limit, offset)


def _chunk_ids(citations: list[Any]) -> list[str]:
    """The chunks retrieved for an answer (its citations, cited or not), in rank order."""
    return [str(c["chunk_id"]) for c in citations if isinstance(c, dict) and c.get("chunk_id")]


def _cited_document(citation: dict[str, Any], collection: str | None) -> str:
    # Citations stored before they carried a document id name it by collection and URI.
    return str(citation.get("document_id") or document_id(collection or "", str(citation.get("uri", ""))))


def _readable_now(
    conn: Any, items: list[dict[str, Any]], collections: list[str | None], reader: Principal
) -> list[dict[str, Any]]:
    """``items`` (answers, given in ``collections``) with the citations of documents ``reader`` may
    not read now removed, and the answer text withheld where one of those was cited (or is not
    marked either way): the text of an extractive answer IS the cited chunks'. Kept citations keep
    their numbers, so the [n] of an answer still point at the right source. A document gone from
    the ledger counts as unreadable."""
    docs = [
        [_cited_document(c, where) if isinstance(c, dict) else None for c in item["citations"]]
        for item, where in zip(items, collections, strict=True)
    ]
    wanted = {d for ids in docs for d in ids if d}
    readable: set[str] = set()
    if wanted:
        rows = conn.execute(
            select(documents.c.id, documents.c.collection, documents.c.acl).where(documents.c.id.in_(wanted))
        ).all()
        readable = {r.id for r in rows if can_read(reader, r.collection, r.acl)}
    out = []
    withheld = False
    for item, ids in zip(items, docs, strict=True):
        kept = [c for c, d in zip(item["citations"], ids, strict=True) if d in readable]
        dropped = [c for c, d in zip(item["citations"], ids, strict=True) if d not in readable]
        if dropped:
            item = {**item, "citations": kept}
            if any(not isinstance(c, dict) or c.get("cited", True) for c in dropped):
                item["answer"] = WITHHELD
                withheld = True
        out.append(item)
    if withheld:
        # A searched query may have been rewritten from an earlier answer (rag.condense: llm), so
        # once any answer is withheld, every turn shows the question as asked instead.
        out = [{**item, "query": item["question"]} if "query" in item else item for item in out]
    return out
