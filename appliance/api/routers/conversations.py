"""Conversations (per user: list, get, rename, delete) and feedback on answers. Turns come back
filtered by what the caller may read now, not by what they could read when they asked."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Response

from appliance.api.deps import AdminDep, ConversationsDep, PrincipalDep
from appliance.api.schemas.common import COMMON_ERRORS, Limit, Offset, PageOf, error_responses
from appliance.api.schemas.conversations import (
    Conversation,
    ConversationCreate,
    ConversationDetail,
    ConversationRename,
    Feedback,
    FeedbackCreate,
)

router = APIRouter(prefix="/api/v1", tags=["conversations"], responses=COMMON_ERRORS)

NOT_FOUND = error_responses(404)


@router.post("/conversations", status_code=201, response_model=Conversation, summary="Start a conversation")
def create_conversation(
    req: ConversationCreate, conversations: ConversationsDep, principal: PrincipalDep
) -> Any:
    return conversations.create(principal.name, req.title, req.collection)


@router.get("/conversations", response_model=PageOf[Conversation], summary="Your conversations, latest first")
def list_conversations(
    conversations: ConversationsDep, principal: PrincipalDep, limit: Limit = 20, offset: Offset = 0
) -> Any:
    return conversations.list(principal.name, limit, offset).as_dict()


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationDetail,
    summary="One of your conversations with its turns",
    responses=NOT_FOUND,
)
def get_conversation(
    conversation_id: str,
    conversations: ConversationsDep,
    principal: PrincipalDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Any:
    conversation = conversations.get(conversation_id, principal.name)
    # Citations (with their chunk text) are re-checked against what the caller may read now.
    turns = conversations.turns(conversation_id, principal.name, limit, offset, reader=principal)
    return {**conversation, "messages": turns.as_dict()}


@router.patch(
    "/conversations/{conversation_id}",
    response_model=Conversation,
    summary="Rename a conversation",
    responses=NOT_FOUND,
)
def rename_conversation(
    conversation_id: str, req: ConversationRename, conversations: ConversationsDep, principal: PrincipalDep
) -> Any:
    return conversations.rename(conversation_id, principal.name, req.title)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    summary="Delete a conversation, its turns and their feedback",
    responses=NOT_FOUND,
)
def delete_conversation(
    conversation_id: str, conversations: ConversationsDep, principal: PrincipalDep
) -> Response:
    conversations.delete(conversation_id, principal.name)
    return Response(status_code=204)


@router.post(
    "/feedback",
    status_code=201,
    response_model=Feedback,
    summary="Thumbs up or down, with a comment, on one of your answers",
    responses=NOT_FOUND,
    tags=["feedback"],
)
async def add_feedback(req: FeedbackCreate, conversations: ConversationsDep, principal: PrincipalDep) -> Any:
    answer_id = req.answer_id.removeprefix("chatcmpl-")
    return await asyncio.to_thread(
        conversations.add_feedback, answer_id, principal.name, req.rating, req.comment
    )


@router.get(
    "/feedback",
    response_model=PageOf[Feedback],
    summary="Admin: feedback with the rated answers, latest first",
    responses=error_responses(403),
    tags=["feedback"],
)
def list_feedback(
    conversations: ConversationsDep,
    _: AdminDep,
    limit: Limit = 50,
    offset: Offset = 0,
    rating: Literal["up", "down"] | None = None,
) -> Any:
    return conversations.list_feedback(limit, offset, rating).as_dict()
