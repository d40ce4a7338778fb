"""The OpenAI chat protocol client every out-of-process backend shares (llama.cpp worker, vLLM,
remote): httpx streaming with server-sent events, errors mapped to the appliance's typed errors.

Closing the async generator early (a client disconnect upstream) closes the HTTP stream, which
is what tells the server on the other side to stop generating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from appliance.domain import ApplianceError, InvalidRequest, Overloaded, Unavailable
from appliance.inference.base import Delta, GenerationParams


class WorkerLost(Unavailable):
    """The connection to the model server broke mid-request (crash, restart, kill)."""


def _error_message(response: httpx.Response, body: bytes) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data)
        return str(err.get("message") or err.get("detail") or err if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        return body.decode("utf-8", errors="replace")[:500] or response.reason_phrase


class OpenAIChatClient:
    def __init__(
        self, base_url: str, api_key: str | None, model: str, timeout_s: float = 600.0, uds: str | None = None
    ) -> None:
        """``uds``: reach the server over this Unix socket (``base_url`` then only names the path)."""
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout_s = timeout_s
        self.uds = uds

    def _client(self, timeout: httpx.Timeout) -> httpx.AsyncClient:
        # Plain-HTTP servers (our workers, vLLM on loopback) need no TLS context, and building one
        # loads the CA bundle, which every request's time to first token would pay.
        tls = self.base_url.startswith("https://")
        transport = httpx.AsyncHTTPTransport(uds=self.uds, verify=tls)
        return httpx.AsyncClient(timeout=timeout, transport=transport)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, messages: list[dict[str, str]], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    async def chat(
        self, messages: list[dict[str, str]], params: GenerationParams
    ) -> AsyncGenerator[Delta, None]:
        finish: str | None = None
        usage: dict[str, int] = {}
        completion = 0
        timeout = httpx.Timeout(self.timeout_s, connect=10.0)
        try:
            async with (
                self._client(timeout) as client,
                client.stream(
                    "POST",
                    f"{self.base_url}/chat/completions",
                    json=self.body(messages, params),
                    headers=self._headers(),
                ) as response,
            ):
                if response.status_code >= 400:
                    raise self._http_error(response, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise Unavailable(f"model server error: {_error_message(response, payload.encode())}")
                    if chunk.get("usage"):
                        usage = {
                            "prompt_tokens": int(chunk["usage"].get("prompt_tokens", 0)),
                            "completion_tokens": int(chunk["usage"].get("completion_tokens", 0)),
                        }
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            completion += 1
                            yield Delta(content=text)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except ApplianceError:
            raise
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError) as exc:
            raise WorkerLost(f"lost the model server at {self.base_url}: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"the model server at {self.base_url} timed out") from exc
        except ValueError as exc:
            raise Unavailable(f"the model server sent an unreadable stream: {exc}") from exc
        if finish is None:
            raise WorkerLost(f"the model server at {self.base_url} ended the stream without finishing")
        yield Delta(
            finish_reason=finish, usage=usage or {"prompt_tokens": 0, "completion_tokens": completion}
        )

    @staticmethod
    def _http_error(response: httpx.Response, body: bytes) -> ApplianceError:
        message = f"model server answered {response.status_code}: {_error_message(response, body)}"
        if response.status_code == 429:
            retry = response.headers.get("retry-after", "1")
            return Overloaded(message, retry_after=float(retry) if retry.replace(".", "").isdigit() else 1.0)
        if response.status_code in (400, 422):
            return InvalidRequest(message)
        return Unavailable(message)

    def health(self, path: str = "/models", timeout_s: float = 3.0) -> bool:
        transport = httpx.HTTPTransport(uds=self.uds, verify=self.base_url.startswith("https://"))
        try:
            with httpx.Client(transport=transport, timeout=timeout_s) as client:
                r = client.get(f"{self.base_url}{path}", headers=self._headers())
        except httpx.HTTPError:
            return False
        return r.status_code < 400
