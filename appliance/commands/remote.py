"""The API of a running ``appliance serve``, for commands run beside it (it owns the data dir)."""

from __future__ import annotations

from typing import Any

from appliance.commands.output import fail


class RemoteServer:
    """An authenticated client of the server named in ``<data dir>/run/serve.json``; an error
    answer ends the command with ``error: STATUS: message``."""

    def __init__(self, info: dict[str, Any]) -> None:
        # Imported here: only commands run beside a server need an HTTP client.
        import httpx

        self.client = httpx.Client(
            base_url=info["url"], headers={"Authorization": f"Bearer {info['token']}"}, timeout=3600
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, json=body)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            fail(f"{response.status_code}: {message}")
        return response.json()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = self.client.get(path, params=params)
        if response.status_code >= 400:
            fail(f"{response.status_code}: {response.text[:500]}")
        return response.json()

    def close(self) -> None:
        self.client.close()
