"""The employees' chat: Blocks (blocks.py), safe rendering (render.py), the services it asks
(data.py), stopping an answer (streaming.py), and its stylesheet and script (assets.py)."""

from ui.chat.assets import CHAT_CSS, CHAT_HEAD
from ui.chat.blocks import build_chat

__all__ = ["CHAT_CSS", "CHAT_HEAD", "build_chat"]
