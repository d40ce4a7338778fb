"""The llama.cpp worker process: owns one ``Llama`` and serves the OpenAI chat protocol on loopback.

Started by ``LlamaCppBackend`` as ``python -m appliance.inference.backends.llamacpp_worker`` with
its configuration as JSON in ``$APPLIANCE_WORKER_CONFIG`` and a per-start bearer token in
``$APPLIANCE_WORKER_TOKEN`` (environment, not argv, so ``ps`` does not show it). It listens on a
Unix socket (mode 0600) when given ``uds`` — that works even in a network namespace whose loopback
is down, as in the zero-egress tests — or else on a free loopback port, and prints one line
``{"uds": PATH}`` / ``{"port": N}`` on stdout once the model is loaded.

A separate process means a crash (or ``kill -9``) of llama.cpp takes down one replica, not the
server, and lets several replicas decode in parallel without sharing the GIL.

One thread calls llama.cpp: it loads the model, warms it and runs every generation. llama.cpp
computes with an OpenMP team per calling thread, and libgomp counts the threads of every team:
once they outnumber the cores (a second calling thread is enough on 2 cores) it stops spinning
between parallel regions and puts its threads to sleep, and each token then waits for them to
wake. Loading on the main thread and generating on executor threads made the worker decode
clearly slower than the same model in-process; from one thread it keeps up (bench/serving.py).

Prefix caching: llama.cpp keeps the KV cache of the previous prompt and re-evaluates only the
tokens after the longest common prefix. Our RAG prompts start with the same system prompt, so
that prefix is never prefilled twice; ``warm_messages`` prefills it at start, before any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Module level, not inside build_app: FastAPI resolves the string annotations against these globals.
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

_DONE = object()
# The one thread that calls llama.cpp (see the module docstring).
LLAMA_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
# Generated text is handed to the event loop at most this often (the first piece at once). Per
# token, the hand-off wakes two event loops in two processes, and on a 2-core box each wake-up
# preempts one of llama.cpp's compute threads, which then stalls the other at its barrier. A few
# tokens at a time is still below what a reader notices.
EMIT_INTERVAL_S = 0.05


class Engine:
    def __init__(self, cfg: dict[str, Any]) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = cfg["name"]
        self.n_ctx = int(cfg["context_tokens"])
        self.gpu_layers = int(cfg.get("gpu_layers", 0))  # -1: all layers on Metal (Apple silicon)
        self.llm = Llama(
            model_path=cfg["path"],
            n_ctx=self.n_ctx,
            n_threads=int(cfg["threads"]),
            n_batch=int(cfg["batch_tokens"]),
            n_gpu_layers=self.gpu_layers,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{cfg['path']} has no chat template; use an instruction-tuned GGUF model")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self.lock = threading.Lock()
        self.callers = {threading.get_ident()}  # threads that called llama.cpp: one (see above)
        self.busy = False
        self.served = 0
        self.cancelled = 0
        self.reused_tokens = 0  # prompt tokens of the last request taken from the KV cache
        self.prefix_restores = 0
        self.warm_tokens: list[int] = []
        self.warm_state: Any = None
        if cfg.get("warm_messages"):
            self.warm(cfg["warm_messages"])

    def prompt(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        # The chat template is applied here so the prompt's token count, and its prefix, are exact.
        formatted = self.formatter(messages=messages)  # type: ignore[arg-type] # OpenAI-shaped dicts
        stop = formatted.stop or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        tokens = self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens, stop

    def warm(self, messages: list[dict[str, Any]]) -> None:
        """Prefill the shared prefix and keep a snapshot of it: a request with another system
        prompt evicts it from the KV cache, and the next RAG request gets it back from the
        snapshot instead of prefilling it again."""
        tokens, _ = self.prompt(messages)
        with self.lock:
            self.callers.add(threading.get_ident())
            for _ in self.llm.create_completion(prompt=tokens, max_tokens=1, temperature=0.0, stream=True):
                pass
            self.warm_tokens = tokens
            self.warm_state = self.llm.save_state()

    def _reuse_prefix(self, tokens: list[int]) -> None:
        """Called with the lock held, before generating."""
        live = _common_prefix(self.llm._input_ids.tolist(), tokens)
        if self.warm_state is not None:
            warm = _common_prefix(self.warm_tokens, tokens)
            if warm > live:
                self.llm.load_state(self.warm_state)
                self.prefix_restores += 1
                live = warm
        self.reused_tokens = min(live, len(tokens) - 1)

    def generate(self, body: dict[str, Any], emit: Any, cancelled: threading.Event) -> None:
        """Runs on the llama thread; ``emit`` hands each piece to the event loop."""
        if cancelled.is_set():  # the client left while this waited for the thread
            self.cancelled += 1
            return
        tokens, stop = self.prompt(body["messages"])
        extra = body.get("stop") or []
        stop += [extra] if isinstance(extra, str) else list(extra)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        if len(tokens) + max_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {len(tokens)} tokens plus {max_tokens} to generate exceeds the "
                f"{self.n_ctx}-token context"
            )
        with self.lock:
            self.callers.add(threading.get_ident())
            self.busy = True
            try:
                self._reuse_prefix(tokens)
                # stream=True: an iterator of chunks (the library's return type also covers the
                # whole-answer dict of stream=False).
                stream: Iterator[Any] = self.llm.create_completion(  # type: ignore[assignment]
                    prompt=tokens,
                    max_tokens=max_tokens,
                    temperature=float(0.2 if body.get("temperature") is None else body["temperature"]),
                    top_p=float(body.get("top_p") or 0.95),
                    stop=stop or None,
                    stream=True,
                )
                completion, finish = 0, None
                pending: list[str] = []
                last_emit = 0.0
                for chunk in stream:
                    if cancelled.is_set():
                        finish = "cancelled"
                        self.cancelled += 1
                        break
                    choice = chunk["choices"][0]
                    if choice.get("text"):
                        completion += 1
                        pending.append(choice["text"])
                        now = time.monotonic()
                        if completion == 1 or now - last_emit >= EMIT_INTERVAL_S:
                            emit("".join(pending))
                            pending.clear()
                            last_emit = now
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if pending and finish != "cancelled":
                    emit("".join(pending))
                emit(
                    {
                        "finish_reason": finish or "stop",
                        "prompt_tokens": len(tokens),
                        "completion_tokens": completion,
                    }
                )
                self.served += 1
            finally:
                self.busy = False


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def build_app(engine: Engine, token: str) -> Any:
    def auth(request: Request) -> None:
        # A dependency, not an HTTP middleware: BaseHTTPMiddleware would relay every streamed token.
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "bad worker token")

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(auth)])

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "busy": engine.busy,
            "served": engine.served,
            "cancelled": engine.cancelled,
            "reused_tokens": engine.reused_tokens,
            "prefix_restores": engine.prefix_restores,
            "warm_tokens": len(engine.warm_tokens),
            "gpu_layers": engine.gpu_layers,
            "llama_threads": len(engine.callers),
        }

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "appliance"}]}

    async def events(body: dict[str, Any]) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                engine.generate(
                    body, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item), cancelled
                )
            except Exception as exc:  # reported to the client as an error event
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = loop.run_in_executor(LLAMA_THREAD, produce)
        try:
            while (item := await queue.get()) is not _DONE:
                yield item
        finally:
            # A disconnect cancels us here: stop llama.cpp at the next token and free the model.
            cancelled.set()
            await asyncio.shield(worker)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise ValueError("messages must be a non-empty list")
        except ValueError as exc:
            return error(400, "invalid_request", str(exc))
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.get("stream"):
            parts: list[str] = []
            async for item in events(body):
                if isinstance(item, Exception):
                    return error(400 if isinstance(item, ValueError) else 500, "generation_failed", str(item))
                if isinstance(item, str):
                    parts.append(item)
                else:
                    final = item
            return {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": engine.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts)},
                        "finish_reason": final["finish_reason"],
                    }
                ],
                "usage": {
                    "prompt_tokens": final["prompt_tokens"],
                    "completion_tokens": final["completion_tokens"],
                    "total_tokens": final["prompt_tokens"] + final["completion_tokens"],
                },
            }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def sse() -> AsyncIterator[str]:
            yield f"data: {json.dumps(_chunk(cid, engine.name, {'role': 'assistant'}, None))}\n\n"
            async for item in events(body):
                if isinstance(item, Exception):
                    err = {"error": {"code": "generation_failed", "message": str(item)}}
                    yield f"data: {json.dumps(err)}\n\n"
                    return
                if isinstance(item, str):
                    yield f"data: {json.dumps(_chunk(cid, engine.name, {'content': item}, None))}\n\n"
                    continue
                yield f"data: {json.dumps(_chunk(cid, engine.name, {}, item['finish_reason']))}\n\n"
                if include_usage:
                    usage = {
                        "prompt_tokens": item["prompt_tokens"],
                        "completion_tokens": item["completion_tokens"],
                        "total_tokens": item["prompt_tokens"] + item["completion_tokens"],
                    }
                    last = _chunk(cid, engine.name, {}, None) | {"choices": [], "usage": usage}
                    yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


def _die_with_parent() -> None:
    """Exit when the parent goes away, so a crashed server leaves no orphan workers. (Not
    PR_SET_PDEATHSIG: it fires when the spawning *thread* exits, and the pool spawns from threads.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)  # polling the parent pid; no event exists for "parent exited"
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    from appliance.egress import install_guard, prepare_offline_env

    prepare_offline_env()
    install_guard()  # loopback only: the worker has nothing to fetch
    _die_with_parent()
    cfg = json.loads(os.environ["APPLIANCE_WORKER_CONFIG"])
    token = os.environ.pop("APPLIANCE_WORKER_TOKEN")
    import uvicorn

    engine = LLAMA_THREAD.submit(Engine, cfg).result()
    if cfg.get("uds"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cfg["uds"])
        old = os.umask(0o177)  # the socket file is born 0600: only our user may connect
        try:
            sock.bind(cfg["uds"])
        finally:
            os.umask(old)
        where: dict[str, Any] = {"uds": cfg["uds"]}
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(cfg.get("port", 0))))
        where = {"port": sock.getsockname()[1]}
    sock.listen(128)  # connections queue from now on, before uvicorn starts accepting
    config = uvicorn.Config(build_app(engine, token), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    sys.stdout.write(json.dumps(where | {"pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
