"""The chat's stylesheet and its one script, read from the files beside this module.

The script is ours and static: it copies an answer's text when its Copy button is clicked (the
sanitiser drops inline handlers, so one delegated listener does it). Nothing from a document or
the model ever reaches a script.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
CHAT_CSS = (_HERE / "chat.css").read_text(encoding="utf-8")
CHAT_HEAD = "<script>\n" + (_HERE / "chat.js").read_text(encoding="utf-8") + "\n</script>"
