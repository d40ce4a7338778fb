"""Mount the Gradio UI on the FastAPI app. Sign-in: user name and an API key of that user."""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi import FastAPI

from appliance.domain import Principal
from ui.chat import build_chat


def mount_ui(app: FastAPI, container: Any, path: str = "/") -> FastAPI:
    sessions: dict[str, Principal] = {}

    def login(username: str, password: str) -> bool:
        principal = container.keys.authenticate(password)
        if principal is None or principal.name != username:
            return False
        sessions[username] = principal
        return True

    blocks = build_chat(container, sessions)
    return gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth=login,
        auth_message="Sign in with your user name and your API key.",
        ssr_mode=False,
        footer_links=[],
    )
