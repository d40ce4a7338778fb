"""llama.cpp backend: a GGUF model through llama-cpp-python, in this process.

llama.cpp contexts are not re-entrant, so one generation runs at a time per backend; the pool in
front of it queues and sheds load. Generation runs on a worker thread and is handed to the event
loop token by token, so the server stays responsive and a disconnect stops it between tokens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from appliance.domain import ApplianceError, Unavailable
from appliance.inference.base import Delta, GenerationParams

_DONE = object()


class LlamaCppBackend:
    def __init__(self, name: str, path: Path, context_tokens: int, threads: int, batch_tokens: int) -> None:
        self.name = name
        self.path = path
        self._context_tokens = context_tokens
        self.threads = threads
        self.batch_tokens = batch_tokens
        self._llm: Any = None
        self._formatter: Any = None
        self._lock = threading.Lock()

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    def start(self) -> None:
        if self._llm is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem
            raise Unavailable(f"llama-cpp-python is not installed ({exc}); run `make install`") from exc
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = Llama(
            model_path=str(self.path),
            n_ctx=self._context_tokens,
            n_threads=self.threads,
            n_batch=self.batch_tokens,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise Unavailable(f"{self.path} has no chat template; use an instruction-tuned GGUF model")
        eos, bos = llm.token_eos(), llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )
        self._llm = llm

    def health(self) -> dict[str, Any]:
        return {"backend": "llamacpp", "model": self.name, "loaded": self._llm is not None}

    def count_tokens(self, text: str) -> int:
        self.start()
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncIterator[Delta]:
        self.start()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                # We apply the model's chat template ourselves so the prompt's token count is exact.
                formatted = self._formatter(messages=messages)
                template_stop = formatted.stop or []
                if isinstance(template_stop, str):
                    template_stop = [template_stop]
                stop = [*template_stop, *params.stop]
                with self._lock:
                    prompt = self._llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=False, special=True)
                    if len(prompt) + params.max_tokens > self._context_tokens:
                        raise Unavailable(
                            f"prompt of {len(prompt)} tokens plus {params.max_tokens} to generate exceeds the "
                            f"{self._context_tokens}-token context"
                        )
                    stream = self._llm.create_completion(
                        prompt=prompt,
                        max_tokens=params.max_tokens,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        stop=stop or None,
                        stream=True,
                    )
                    completion = 0
                    finish = None
                    for chunk in stream:
                        if cancelled.is_set():
                            finish = "cancelled"
                            break
                        choice = chunk["choices"][0]
                        text = choice.get("text") or ""
                        if text:
                            completion += 1
                            loop.call_soon_threadsafe(queue.put_nowait, Delta(content=text))
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    usage = {"prompt_tokens": len(prompt), "completion_tokens": completion}
                    loop.call_soon_threadsafe(
                        queue.put_nowait, Delta(finish_reason=finish or "stop", usage=usage)
                    )
            except Exception as exc:  # surfaced to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, ApplianceError):
                    raise item
                if isinstance(item, Exception):
                    raise Unavailable(f"generation failed: {type(item).__name__}: {item}")
                yield item
        finally:
            cancelled.set()
            await asyncio.shield(worker)

    def stop(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
