"""What the chat asks of the services, as the signed-in principal: the same services and rules as
the REST routes (collections a principal may see, conversations and turns filtered by what the
reader may read now, feedback on one's own answers)."""

from __future__ import annotations

from typing import Any

from appliance.domain import Principal
from appliance.security.acl import can_read

HISTORY_TURNS = 30  # turns of a conversation shown: the Chatbot re-sends them all on every token
CONVERSATIONS_SHOWN = 50


def collections(container: Any, principal: Principal) -> list[str]:
    """The collections the principal may read in or curates: GET /api/v1/collections' rule."""
    return list(container.collections.visible_names(principal))


def conversations(container: Any, principal: Principal) -> list[dict[str, Any]]:
    return list(container.conversations.list(principal.name, CONVERSATIONS_SHOWN, 0).items)


def turns(container: Any, principal: Principal, conversation_id: str) -> list[dict[str, Any]]:
    """The last turns of one of the principal's conversations, as the REST API hands them back:
    citations of documents the reader may no longer read dropped, such answers withheld."""
    store = container.conversations
    total = store.get(conversation_id, principal.name)["turns"]
    offset = max(0, int(total) - HISTORY_TURNS)
    page = store.turns(conversation_id, principal.name, HISTORY_TURNS, offset, reader=principal)
    return [
        {
            "id": item["id"],
            "question": item["question"],
            "answer": item["answer"],
            "citations": item["citations"],
            "support": item["support"],
            "fallback": item["fallback"],
        }
        for item in page.items
    ]


def documents(container: Any, principal: Principal, citations: list[dict[str, Any]]) -> dict[str, Any]:
    """Version and index date of the cited documents the principal may read (for the cards)."""
    out: dict[str, Any] = {}
    for doc_id in {str(c.get("document_id")) for c in citations if isinstance(c, dict)}:
        rec = container.ledger.get(doc_id)
        if rec is not None and can_read(principal, rec.collection, rec.acl):
            out[doc_id] = {
                "version": rec.version,
                "updated_at": rec.updated_at.isoformat() if rec.updated_at else None,
            }
    return out
