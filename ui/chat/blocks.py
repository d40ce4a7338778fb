"""The employees' chat, built from Blocks so every label can be translated.

Per-user state lives in ``gr.State`` (this tab) and ``gr.BrowserState`` (the language chosen and
the conversation open, kept across reloads; the language also in the site-wide ``kb-lang`` cookie,
which the console and the passage preview a citation opens read too); nothing of a user is kept
on a shared object except the stop events, which are keyed by the browser session. Every handler asks ``sessions`` who the
session is NOW and does nothing for a session that has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from appliance.domain import ApplianceError, NotFound, Overloaded, Principal
from appliance.rag.conversations import WITHHELD
from ui.chat import data
from ui.chat.render import chat_messages, retry_notice
from ui.chat.streaming import Stops, until_stopped
from ui.i18n import LANG_COOKIE, LANGUAGES, SET_LANG_JS, language_switch, pick_language, t

log = logging.getLogger(__name__)
STREAM_EVERY_S = 0.12  # the Chatbot re-sends every message on each update: coarser pieces


def _state(lang: str = "en") -> dict[str, Any]:
    return {"lang": lang, "conversation": None, "turns": [], "feedback": None}


def _messages(st: dict[str, Any]) -> list[dict[str, str]]:
    return chat_messages(st["turns"], st["lang"], WITHHELD)


def _conversation_choices(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [((c["title"] or "…")[:60], c["id"]) for c in items]


def _header(lang: str, principal: Principal | None) -> str:
    who = (
        f'<span class="kb-user">{html.escape(t(lang, "signed_in_as", user=principal.name))}</span> '
        f'<a class="kb-signout" href="/logout">{html.escape(t(lang, "sign_out"))}</a>'
        if principal is not None
        else ""
    )
    return (
        f'<div class="kb-header"><div><h1>{html.escape(t(lang, "title"))}</h1>'
        f'<p>{html.escape(t(lang, "subtitle"))}</p></div><div class="kb-who">{who}</div></div>'
    )


def build_chat(container: Any, sessions: Any) -> gr.Blocks:
    """The chat at ``/``. ``sessions.get(request.username)`` is the principal of a live session."""
    stops = Stops()

    def who(request: gr.Request) -> Principal | None:
        return sessions.get(request.username or "")  # type: ignore[no-any-return]

    with gr.Blocks(title="Knowledge base", analytics_enabled=False) as blocks:
        st = gr.State(_state())
        stored = gr.BrowserState({"lang": None, "conversation": None}, storage_key="kb-chat")
        with gr.Row(elem_id="kb-top", equal_height=True):
            header = gr.HTML(_header("en", None), elem_id="kb-header")
            language = language_switch()
        with gr.Row(elem_id="kb-body"):
            with gr.Column(scale=1, min_width=230, elem_id="kb-side"):
                new_btn = gr.Button("New conversation", elem_id="kb-new", size="sm")
                convs = gr.Radio([], label="Conversations", elem_id="kb-conversations")
                rename_box = gr.Textbox(
                    label="Title of this conversation", elem_id="kb-rename-text", max_length=200
                )
                with gr.Row():
                    rename_btn = gr.Button("Rename", elem_id="kb-rename", size="sm")
                    delete_btn = gr.Button("Delete", elem_id="kb-delete", size="sm", variant="stop")
            with gr.Column(scale=4, elem_id="kb-main"):
                collection = gr.Dropdown([], label="Knowledge base", elem_id="kb-collection")
                chatbot = gr.Chatbot(
                    label="Chat",
                    show_label=False,  # Gradio floats the label over the messages
                    elem_id="kb-chat",
                    height=540,
                    render_markdown=False,  # messages are our escaped HTML (ui/chat/render.py)
                    sanitize_html=True,
                    latex_delimiters=[],
                    allow_tags=False,
                    buttons=[],
                    feedback_options=("Like", "Dislike"),
                    group_consecutive_messages=False,
                    layout="panel",
                )
                with gr.Row(elem_id="kb-ask-row"):
                    question = gr.Textbox(
                        label="Your question",
                        placeholder="Ask about your documents…",
                        elem_id="kb-question",
                        scale=6,
                        lines=1,
                        max_lines=6,
                        max_length=4000,
                    )
                    send_btn = gr.Button("Ask", variant="primary", elem_id="kb-send", scale=0, min_width=90)
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="kb-stop", scale=0, min_width=90)
                with gr.Group(visible=False, elem_id="kb-feedback") as fb_group:
                    fb_note = gr.HTML(elem_id="kb-feedback-note")
                    fb_comment = gr.Textbox(label="Comment", elem_id="kb-feedback-comment", max_length=4000)
                    fb_send = gr.Button("Send comment", elem_id="kb-feedback-send", size="sm")

        labelled = [header, language, new_btn, convs, rename_box, rename_btn, delete_btn]
        labelled += [collection, chatbot, question, send_btn, stop_btn, fb_comment, fb_send]

        def labels(lang: str, principal: Principal | None) -> dict[Any, dict[str, Any]]:
            """The translated text of every labelled component, as update arguments."""
            return {
                header: {"value": _header(lang, principal)},
                language: {"label": t(lang, "language"), "value": lang},
                new_btn: {"value": t(lang, "new_chat")},
                convs: {"label": t(lang, "conversations")},
                rename_box: {"label": t(lang, "rename_label")},
                rename_btn: {"value": t(lang, "rename")},
                delete_btn: {"value": t(lang, "delete")},
                collection: {"label": t(lang, "collection")},
                chatbot: {"label": t(lang, "chat"), "placeholder": t(lang, "empty_chat")},
                question: {"label": t(lang, "question"), "placeholder": t(lang, "question_placeholder")},
                send_btn: {"value": t(lang, "send")},
                stop_btn: {"value": t(lang, "stop")},
                fb_comment: {
                    "label": t(lang, "feedback_comment"),
                    "placeholder": t(lang, "feedback_placeholder"),
                },
                fb_send: {"value": t(lang, "feedback_send")},
            }

        def relabel(updates: dict[Any, dict[str, Any]]) -> list[Any]:
            return [gr.update(**updates[c]) for c in labelled]

        async def open_conversation(
            principal: Principal, s: dict[str, Any], conversation_id: str | None
        ) -> dict[str, Any]:
            s = {**_state(s["lang"]), "conversation": conversation_id}
            if conversation_id:
                s["turns"] = await asyncio.to_thread(data.turns, container, principal, conversation_id)
                cited = [c for turn in s["turns"] for c in turn["citations"]]
                docs = await asyncio.to_thread(data.documents, container, principal, cited)
                for turn in s["turns"]:
                    turn["docs"] = docs
            return s

        # -- page load and language ----------------------------------------------------------------

        async def on_load(saved: dict[str, Any] | None, request: gr.Request) -> list[Any]:
            saved = dict(saved or {})
            principal = who(request)
            # The cookie is the choice made last on either switch (the console's too).
            chosen_lang = request.cookies.get(LANG_COOKIE) or saved.get("lang")
            lang = pick_language(request.headers.get("accept-language"), chosen_lang)
            s = _state(lang)
            names: list[str] = []
            chosen = None
            items: list[dict[str, Any]] = []
            if principal is None:
                s["turns"] = [{"question": "", "notice": {"key": "expired", "kind": "error"}}]
            else:
                names = await asyncio.to_thread(data.collections, container, principal)
                items = await asyncio.to_thread(data.conversations, container, principal)
                cid = saved.get("conversation")
                if not any(c["id"] == cid for c in items):
                    cid = None
                s = await open_conversation(principal, s, cid)
                default = container.settings.rag.default_collection
                kept = next((c["collection"] for c in items if c["id"] == cid), None)
                chosen = next((n for n in (kept, default) if n in names), names[0] if names else None)
            saved.update(lang=lang, conversation=s["conversation"])
            updates = labels(lang, principal)
            updates[collection].update(
                choices=names, value=chosen, info=None if names else t(lang, "no_collections")
            )
            updates[convs].update(choices=_conversation_choices(items), value=s["conversation"])
            updates[chatbot].update(value=_messages(s))
            return [*relabel(updates), s, saved]

        # The language shown is written into the cookie, so the preview a citation opens follows it.
        blocks.load(on_load, [stored], [*labelled, st, stored]).then(None, [language], None, js=SET_LANG_JS)

        def on_language(
            lang: str, s: dict[str, Any], saved: dict[str, Any] | None, request: gr.Request
        ) -> list[Any]:
            s = {**s, "lang": lang if lang in LANGUAGES else "en"}
            updates = labels(s["lang"], who(request))
            updates[chatbot].update(value=_messages(s))
            return [*relabel(updates), s, {**(saved or {}), "lang": s["lang"]}]

        language.input(on_language, [language, st, stored], [*labelled, st, stored], js=SET_LANG_JS)

        # -- asking ----------------------------------------------------------------------------------

        async def respond(
            text: str, name: str | None, s: dict[str, Any], saved: dict[str, Any] | None, request: gr.Request
        ) -> AsyncIterator[list[Any]]:
            principal = who(request)
            q = (text or "").strip()
            saved = dict(saved or {})
            idle = gr.update(interactive=True)
            if not q:
                yield [gr.update(), gr.update(), s, gr.update(), saved, idle, gr.update()]
                return
            s = {**s, "turns": list(s["turns"]), "feedback": None}
            turn: dict[str, Any] = {"question": q, "answer": "", "citations": [], "streaming": True}
            s["turns"].append(turn)
            if principal is None:
                turn.update(streaming=False, notice={"key": "expired", "kind": "error"})
                yield [_messages(s), "", s, gr.update(), saved, idle, gr.update()]
                return
            try:
                await asyncio.to_thread(container.metering.check_quota, principal)
            except Overloaded as exc:
                when = retry_notice(exc.retry_after)
                turn.update(
                    streaming=False, notice={"key": "quota", "kind": "error", "values": {"when": when}}
                )
                yield [_messages(s), "", s, gr.update(), saved, idle, gr.update()]
                return
            if not s["conversation"]:
                created = await asyncio.to_thread(container.conversations.create, principal.name, "", name)
                s["conversation"] = created["id"]
                saved["conversation"] = created["id"]
            yield [_messages(s), "", s, gr.update(), saved, gr.update(interactive=False), gr.update()]
            stop = stops.start(request.session_hash or "")
            events = container.rag.ask_stream(
                q, principal, collection=name, conversation_id=s["conversation"]
            )
            shown_at = 0.0
            try:
                async for event in until_stopped(events, stop):
                    if event["type"] == "citations":
                        turn["id"] = event["id"]
                    elif event["type"] == "delta":
                        turn["answer"] += event["content"]
                        if time.monotonic() - shown_at >= STREAM_EVERY_S:
                            shown_at = time.monotonic()
                            yield [_messages(s), gr.update(), s, gr.update(), saved, gr.update(), gr.update()]
                    elif event["type"] == "done":
                        result = event["result"]
                        turn.update(
                            answer=result.answer,
                            citations=result.citations,
                            support=result.support,
                            fallback=result.fallback,
                            done=True,
                        )
                # A Stop that came after the answer was complete stopped nothing: it is stored.
                turn["stopped"] = stop.is_set() and not turn.get("done")
                if turn["stopped"]:
                    turn["notice"] = {"key": "stopped", "kind": "info"}
                    turn["id"] = None  # a stopped answer is not stored: nothing to rate
            except Overloaded as exc:
                turn.update(
                    notice={"key": "busy", "kind": "error", "values": {"when": retry_notice(exc.retry_after)}}
                )
            except ApplianceError as exc:
                turn.update(notice={"key": "error", "kind": "error", "values": {"message": exc.message}})
            except Exception:
                log.exception("answering in the chat failed")
                turn.update(notice={"key": "error", "kind": "error", "values": {"message": "internal error"}})
            finally:
                stops.end(request.session_hash or "", stop)
            turn["streaming"] = False
            turn["docs"] = await asyncio.to_thread(data.documents, container, principal, turn["citations"])
            items = await asyncio.to_thread(data.conversations, container, principal)
            choices = gr.update(choices=_conversation_choices(items), value=s["conversation"])
            title = next((c["title"] for c in items if c["id"] == s["conversation"]), "")
            yield [_messages(s), gr.update(), s, choices, saved, idle, title]

        ask_inputs = [question, collection, st, stored]
        ask_outputs = [chatbot, question, st, convs, stored, send_btn, rename_box]
        # No concurrency limit here: the inference pool admits and queues fairly (429 when full).
        for trigger in (question.submit, send_btn.click):
            trigger(respond, ask_inputs, ask_outputs, concurrency_limit=None, show_progress="hidden")

        def on_stop(request: gr.Request) -> None:
            stops.stop(request.session_hash or "")

        stop_btn.click(on_stop, None, None, concurrency_limit=None, show_progress="hidden")

        # -- conversations -----------------------------------------------------------------------------

        async def on_select(
            cid: str | None, s: dict[str, Any], saved: dict[str, Any] | None, request: gr.Request
        ) -> list[Any]:
            principal = who(request)
            if principal is None:
                return [gr.update(), s, gr.update(), saved, gr.update()]
            try:
                s = await open_conversation(principal, s, cid)
            except NotFound:
                s = _state(s["lang"])
            names = await asyncio.to_thread(data.collections, container, principal)
            got = await asyncio.to_thread(data.conversations, container, principal)
            kept = next((c["collection"] for c in got if c["id"] == s["conversation"]), None)
            title = next((c["title"] for c in got if c["id"] == s["conversation"]), "")
            saved = {**(saved or {}), "conversation": s["conversation"]}
            return [_messages(s), s, gr.update(value=kept) if kept in names else gr.update(), saved, title]

        convs.input(on_select, [convs, st, stored], [chatbot, st, collection, stored, rename_box])

        async def on_new(s: dict[str, Any], saved: dict[str, Any] | None, request: gr.Request) -> list[Any]:
            principal = who(request)
            s = _state(s["lang"])
            items = await asyncio.to_thread(data.conversations, container, principal) if principal else []
            return [
                _messages(s),
                s,
                gr.update(choices=_conversation_choices(items), value=None),
                {**(saved or {}), "conversation": None},
                "",
            ]

        new_btn.click(on_new, [st, stored], [chatbot, st, convs, stored, rename_box])
        # The Chatbot's own clear button: a new conversation too (the old one stays in the list).
        chatbot.clear(on_new, [st, stored], [chatbot, st, convs, stored, rename_box])

        async def on_rename(title: str, s: dict[str, Any], request: gr.Request) -> Any:
            principal = who(request)
            if principal is None or not s["conversation"] or not (title or "").strip():
                return gr.update()
            await asyncio.to_thread(container.conversations.rename, s["conversation"], principal.name, title)
            items = await asyncio.to_thread(data.conversations, container, principal)
            return gr.update(choices=_conversation_choices(items), value=s["conversation"])

        rename_btn.click(on_rename, [rename_box, st], [convs])

        async def on_delete(
            s: dict[str, Any], saved: dict[str, Any] | None, request: gr.Request
        ) -> list[Any]:
            principal = who(request)
            if principal is not None and s["conversation"]:
                with contextlib.suppress(NotFound):  # already gone (deleted in another tab)
                    await asyncio.to_thread(container.conversations.delete, s["conversation"], principal.name)
            return await on_new(s, saved, request)

        delete_btn.click(on_delete, [st, stored], [chatbot, st, convs, stored, rename_box])

        # -- feedback ------------------------------------------------------------------------------------

        async def on_like(s: dict[str, Any], like: gr.LikeData, request: gr.Request) -> list[Any]:
            principal = who(request)
            index = like.index if isinstance(like.index, int) else like.index[0]
            turns = s["turns"]
            turn = turns[index // 2] if 0 <= index // 2 < len(turns) else None
            lang = s["lang"]
            if principal is None or turn is None or not turn.get("id") or like.liked not in (True, False):
                return [gr.update(visible=True), _note(t(lang, "feedback_none")), s]
            rating = "up" if like.liked else "down"
            saved = await asyncio.to_thread(
                container.conversations.add_feedback, turn["id"], principal.name, rating, None
            )
            s = {**s, "feedback": saved["id"]}
            note = (
                t(lang, "feedback_up" if rating == "up" else "feedback_down")
                + " "
                + t(lang, "feedback_title")
            )
            return [gr.update(visible=True), _note(note), s]

        chatbot.like(on_like, [st], [fb_group, fb_note, st])

        async def on_comment(comment: str, s: dict[str, Any], request: gr.Request) -> list[Any]:
            principal = who(request)
            lang = s["lang"]
            if principal is None or not s.get("feedback"):
                return [gr.update(), _note(t(lang, "feedback_none")), s]
            if (comment or "").strip():
                await asyncio.to_thread(
                    container.conversations.comment_feedback, s["feedback"], principal.name, comment
                )
            return [gr.update(value=""), _note(t(lang, "feedback_saved")), {**s, "feedback": None}]

        fb_send.click(on_comment, [fb_comment, st], [fb_comment, fb_note, st])
    return blocks


def _note(text: str) -> str:
    return f'<div class="kb-feedback-note">{html.escape(text)}</div>'
