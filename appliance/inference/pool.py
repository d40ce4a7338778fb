"""The inference pool: replicas per model, admission control, fair queueing, deadlines, health.

- Routing: a request goes to a live replica of its model with a free slot (llama.cpp workers have
  one slot, vLLM servers ``max_num_seqs``), the least loaded first; a replica failing its health
  checks is out of routing while another one can serve.
- Admission: with every slot taken a request waits in a bounded queue (``max_queue`` per model)
  for at most ``queue_timeout_s``; a full queue or a long wait is ``Overloaded`` (429 +
  Retry-After) at once, never a hang. ``reserve()`` takes the slot (or the place in the queue)
  ahead of the generation, so a streaming endpoint can answer 429 before it sends its 200.
- Fairness: the queue is one FIFO per user, served round-robin, so one user's burst can't starve
  everyone else, and one user holds at most ``max_queue_per_user`` of its places.
- Across API replicas (scale mode, ``leases`` in Redis): a request that has to wait also takes a
  place in the appliance-wide queue of its model, so ``max_queue`` and ``max_queue_per_user`` count
  the waiting requests of every replica; places have a TTL, so a replica that dies frees them.
- Deadline: a generation that outlives ``request_timeout_s`` is stopped (504) and frees its slot.
- Cancellation: closing the stream (a client disconnect) closes the backend stream, which stops
  the worker at its next token, and frees the slot.
- Health (one replica's probe and healing: health.py): a checker thread restarts crashed
  workers and probes every replica's health endpoint (one short request each interval); a
  replica that fails is out of routing until it passes, and a local worker that stops answering
  (alive but hung) is killed and restarted. A request that was on a crashed worker ends with a
  clean 503 and the next one lands on the restarted worker.

State is guarded by a thread lock and waiters are woken through their own event loop, because
the CLI may drive the pool from several loops in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from appliance.domain import ApplianceError, NotFound, Overloaded
from appliance.inference.base import Delta, GenerationParams, InferenceBackend
from appliance.inference.health import HUNG_AFTER, Replica, alive, count_restarts, probe_and_heal
from appliance.observability import Metrics
from appliance.sharedstate import CapReached, Held, Leases

log = logging.getLogger(__name__)
__all__ = ["HUNG_AFTER", "ChatRequest", "DeadlineExceeded", "InferencePool", "Lease", "Replica"]

ANONYMOUS = "-"
# A shared queue place outlives the longest wait by this much before it counts as abandoned.
PLACE_TTL_MARGIN_S = 30.0


class DeadlineExceeded(ApplianceError):
    status, code = 504, "deadline_exceeded"


@dataclass
class _Waiter:
    user: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Replica]
    replica: Replica | None = None


@dataclass
class _Group:
    name: str
    replicas: list[Replica]
    queues: dict[str, deque[_Waiter]] = field(default_factory=dict)
    turns: deque[str] = field(default_factory=deque)  # users with waiters, in round-robin order
    service_s: float = 2.0  # moving average of a generation's duration, for Retry-After

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    @property
    def capacity(self) -> int:
        return sum(r.slots for r in self.replicas)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    params: GenerationParams
    model: str | None = None
    user: str | None = None


class _Chats:
    """``chat`` as the answering code calls it, on the pool or on a ``Lease`` standing in for it."""

    def chat(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        model: str | None = None,
        user: str | None = None,
    ) -> AsyncGenerator[Delta, None]:
        return self._open(ChatRequest(messages, params, model, user))

    def _open(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        raise NotImplementedError


class Lease(_Chats):
    """One slot of a model, taken by ``InferencePool.reserve`` before the generation that uses it.

    It stands in for the pool in ``chat`` (the answering code takes any object with the pool's
    ``chat``), so the code that reserved can hand it down unchanged: the first generation runs on
    the held slot, a further one queues like any other request. ``release()`` gives the slot back
    when no generation started on it (an answer that needed no model after all, an error before
    it); once one started, the generation frees the slot when it ends. Calling it twice is harmless.
    """

    def __init__(self, pool: InferencePool, group: _Group, replica: Replica) -> None:
        self._pool = pool
        self._group = group
        self._replica = replica
        self._held = True
        self._claimed = False  # chat() was called
        self._started = False  # a generation began on the slot and now owns it

    @property
    def model(self) -> str:
        return self._group.name

    def _open(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        model = request.model
        if self._claimed or not self._held or (model is not None and model != self._group.name):
            return self._pool.chat(request.messages, request.params, model or self._group.name, request.user)
        self._claimed = True
        return self._pool._generate(self, request.messages, request.params)

    def release(self) -> None:
        if not self._started:
            self._free(None)

    def _free(self, service_s: float | None) -> None:
        with self._pool._mu:
            if not self._held:
                return
            self._held = False
        self._pool._release(self._group, self._replica, service_s)


class InferencePool(_Chats):
    def __init__(
        self,
        backends: list[InferenceBackend],
        max_queue: int,
        queue_timeout_s: float,
        request_timeout_s: float = 600.0,
        health_interval_s: float = 5.0,
        metrics: Metrics | None = None,
        max_queue_per_user: int | None = None,
        leases: Leases | None = None,
    ) -> None:
        """``leases``: where the queue's places are counted across API replicas (Redis in scale
        mode); None: this pool's own queue is the whole queue."""
        if not backends:
            raise ValueError("at least one backend")
        self._groups: dict[str, _Group] = {}
        for b in backends:
            group = self._groups.setdefault(b.name, _Group(b.name, []))
            group.replicas.append(Replica(b, max(1, b.slots)))
        self.default = backends[0].name
        self.max_queue = max_queue
        # One user may hold only part of a model's queue, or its burst would leave others nothing
        # but 429s however fair the dispatch (None: the whole queue, as before).
        self.max_queue_per_user = (
            max_queue if max_queue_per_user is None else min(max_queue_per_user, max_queue)
        )
        self.queue_timeout_s = queue_timeout_s
        self.request_timeout_s = request_timeout_s
        self.health_interval_s = health_interval_s
        self.metrics = metrics or Metrics()
        self.leases = leases
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None

    # -- what the RAG pipeline and the routers use ---------------------------------------------

    @property
    def backends(self) -> dict[str, InferenceBackend]:
        """One backend per served model name (its first replica): for names, tokens, context."""
        return {name: g.replicas[0].backend for name, g in self._groups.items()}

    def backend(self, name: str | None = None) -> InferenceBackend:
        return self._group(name).replicas[0].backend

    def _group(self, name: str | None) -> _Group:
        key = name or self.default
        if key not in self._groups:
            raise NotFound(f"model {key!r} is not served here")
        return self._groups[key]

    def start(self) -> None:
        """Start every replica and the health checker; calling it again starts what is not running."""
        replicas = [r for g in self._groups.values() for r in g.replicas]
        # Workers load in parallel: N replicas should not take N times as long to come up.
        with ThreadPoolExecutor(max_workers=len(replicas)) as ex:
            for future in [ex.submit(r.backend.start) for r in replicas]:
                future.result()
        if self._checker is None:
            self._stop.clear()
            self._checker = threading.Thread(target=self._check_loop, name="pool-health", daemon=True)
            self._checker.start()

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, g in self._groups.items():
            # Backend health may be a network call (remote): never under the dispatch lock.
            replicas = [
                r.backend.health() | {"outstanding": r.outstanding, "healthy": r.healthy} for r in g.replicas
            ]
            out[name] = {"replicas": replicas, "waiting": g.waiting, "capacity": g.capacity}
        return out

    def healthy_replicas(self) -> dict[str, tuple[int, int]]:
        """(replicas in routing, all replicas) per model: passing their last health probe and,
        for local workers, alive now. Cheap: no probe is made here."""
        with self._mu:
            return {
                name: (sum(r.healthy and alive(r) for r in g.replicas), len(g.replicas))
                for name, g in self._groups.items()
            }

    def stats(self, model: str | None = None) -> dict[str, int]:
        g = self._group(model)
        with self._mu:
            return {"outstanding": sum(r.outstanding for r in g.replicas), "waiting": g.waiting}

    async def reserve(self, model: str | None = None, user: str | None = None) -> Lease:
        """Take a slot of ``model`` for one generation: at once when a replica has one free, else
        after a wait in the fair queue. A full queue, or a wait past ``queue_timeout_s``, raises
        ``Overloaded``. Admission and the slot are one step, so nothing can take the slot between
        the answer "admitted" and the generation (a check first and a ``chat`` later could)."""
        group = self._group(model)
        queued_at = time.perf_counter()
        replica = await self._acquire(group, user or ANONYMOUS)
        self.metrics.queue_wait.labels(group.name).observe(time.perf_counter() - queued_at)
        return Lease(self, group, replica)

    async def _open(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        lease = await self.reserve(request.model, request.user)
        try:
            # aclosing: when our consumer closes us (a disconnect), the generation must close now,
            # not when the garbage collector gets to it, or the worker runs on with the slot freed.
            async with contextlib.aclosing(lease.chat(request.messages, request.params)) as stream:
                async for delta in stream:
                    yield delta
        finally:
            lease.release()  # a no-op once the generation started; it frees the slot itself

    async def _generate(
        self, lease: Lease, messages: list[dict[str, str]], params: GenerationParams
    ) -> AsyncGenerator[Delta, None]:
        lease._started = True
        group, replica = lease._group, lease._replica
        name = group.name
        started = time.perf_counter()
        self.metrics.in_flight.labels(name).inc()
        outcome, first_at, tokens = "error", 0.0, 0
        stream = replica.backend.chat(messages, params)
        deadline = started + self.request_timeout_s
        try:
            while True:
                remaining = deadline - time.perf_counter()
                try:
                    async with asyncio.timeout(max(remaining, 0.001)):
                        delta = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"the answer took longer than {self.request_timeout_s:g} s and was stopped"
                    ) from None
                if delta.content:
                    tokens += 1
                    if not first_at:
                        first_at = time.perf_counter()
                        self.metrics.ttft.labels(name).observe(first_at - started)
                if delta.usage:
                    self.metrics.tokens.labels(name, "prompt").inc(delta.usage.get("prompt_tokens", 0))
                    self.metrics.tokens.labels(name, "completion").inc(
                        delta.usage.get("completion_tokens", 0)
                    )
                yield delta
            outcome = "ok"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        except ApplianceError as exc:
            self.metrics.observe_error(name, exc.code)
            raise
        except Exception as exc:
            self.metrics.observe_error(name, type(exc).__name__)
            raise
        finally:
            try:
                await _close_quietly(stream)
            finally:  # even when cancelled while closing: a slot that is never freed is lost for good
                ended = time.perf_counter()
                self.metrics.in_flight.labels(name).dec()
                self.metrics.requests.labels(name, outcome).inc()
                if first_at and tokens > 1 and ended > first_at:
                    self.metrics.decode_rate.labels(name).observe((tokens - 1) / (ended - first_at))
                if outcome == "ok":
                    self.metrics.request_seconds.labels(name).observe(ended - started)
                lease._free(ended - started if outcome == "ok" else None)

    # -- admission and fair dispatch --------------------------------------------------------------

    def _free_replica(self, group: _Group) -> Replica | None:
        # A replica failing its health checks is out of routing while another one passes them.
        # When none does, requests still go to one (they fail fast with a 503, or restart a crashed
        # worker) rather than wait in the queue for a replica that may not come back.
        candidates = [r for r in group.replicas if r.healthy] or group.replicas
        free = [r for r in candidates if r.outstanding < r.slots]
        if not free:
            return None
        # A live replica first, however loaded: a dead one restarts on the request path, which
        # costs a model load (the longest wait a request can meet). Then least outstanding.
        return min(free, key=lambda r: (not alive(r), r.outstanding / r.slots))

    def _retry_after(self, group: _Group) -> float:
        return float(max(1, math.ceil(group.service_s * (group.waiting + 1) / group.capacity)))

    def _refuse(self, group: _Group, kind: str) -> Overloaded:
        self.metrics.requests.labels(group.name, "rejected").inc()
        self.metrics.observe_error(group.name, kind)
        match kind:
            case "queue_full":
                message = f"model {group.name!r} is busy and its queue of {self.max_queue} is full"
            case "user_queue_full":
                message = (
                    f"model {group.name!r} is busy and you already have {self.max_queue_per_user} "
                    "requests waiting for it"
                )
            case _:
                message = f"model {group.name!r} stayed busy for {self.queue_timeout_s:g} s"
        return Overloaded(message, retry_after=self._retry_after(group))

    def _admit(self, group: _Group, user: str, waiter: _Waiter | None) -> Replica | None:
        """A free slot, taken; else the queue's caps checked (Overloaded) and ``waiter`` queued.
        Called with the lock held."""
        replica = self._free_replica(group) if not group.turns else None
        if replica is not None:
            replica.outstanding += 1
            return replica
        if group.waiting >= self.max_queue:
            raise self._refuse(group, "queue_full")
        if len(group.queues.get(user, ())) >= self.max_queue_per_user:
            raise self._refuse(group, "user_queue_full")
        if waiter is not None:
            group.queues.setdefault(user, deque()).append(waiter)
            if user not in group.turns:
                group.turns.append(user)
            self.metrics.queued.labels(group.name).set(group.waiting)
        return None

    def _take_place(self, group: _Group, user: str) -> Held:
        """A place in the queue of every replica of the appliance (``leases`` in Redis), so a user
        cannot pass ``max_queue_per_user`` by spreading requests over API replicas."""
        assert self.leases is not None
        caps = [
            (f"queue:{group.name}", self.max_queue),
            (f"queue:{group.name}:{user}", self.max_queue_per_user),
        ]
        try:
            # It lives while the request may wait; one left by a replica that died runs out then.
            return self.leases.acquire(caps, 1, self.queue_timeout_s + PLACE_TTL_MARGIN_S)
        except CapReached as full:
            raise self._refuse(group, "queue_full" if full.key == caps[0][0] else "user_queue_full") from None

    async def _place(self, group: _Group, user: str) -> Held:
        """``_take_place`` off the event loop; a request cancelled meanwhile gives back the place
        the thread still takes, instead of holding it until its TTL."""
        leases = self.leases
        assert leases is not None
        taking = asyncio.ensure_future(asyncio.to_thread(self._take_place, group, user))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(
                lambda t: leases.release(t.result()) if not t.cancelled() and t.exception() is None else None
            )
            raise

    async def _acquire(self, group: _Group, user: str) -> Replica:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(user, loop, loop.create_future())
        place: Held | None = None
        if self.leases is not None:
            with self._mu:
                replica = self._admit(group, user, None)
            if replica is not None:
                return replica
            place = await self._place(group, user)
        try:
            with self._mu:
                replica = self._admit(group, user, waiter)
            if replica is not None:
                return replica
            try:
                async with asyncio.timeout(self.queue_timeout_s):
                    return await asyncio.shield(waiter.future)
            except BaseException as exc:
                with self._mu:
                    assigned = waiter.replica
                    if assigned is None:
                        self._forget(group, waiter)
                    self.metrics.queued.labels(group.name).set(group.waiting)
                if assigned is not None:  # the slot came just as we gave up: hand it on
                    self._release(group, assigned, None)
                if isinstance(exc, TimeoutError):
                    raise self._refuse(group, "queue_timeout") from None
                raise
        finally:
            if self.leases is not None:
                self.leases.release(place)  # out of the queue, with a slot or without

    def _forget(self, group: _Group, waiter: _Waiter) -> None:
        queue = group.queues.get(waiter.user)
        if queue and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del group.queues[waiter.user]
                if waiter.user in group.turns:
                    group.turns.remove(waiter.user)

    def _release(self, group: _Group, replica: Replica, service_s: float | None) -> None:
        with self._mu:
            replica.outstanding -= 1
            if service_s is not None:
                group.service_s = 0.8 * group.service_s + 0.2 * service_s
            self._dispatch(group)
            self.metrics.queued.labels(group.name).set(group.waiting)

    def _dispatch(self, group: _Group) -> None:
        """Hand free slots to waiters, one user at a time in turn. Called with the lock held."""
        while group.turns:
            replica = self._free_replica(group)
            if replica is None:
                return
            user = group.turns.popleft()
            queue = group.queues[user]
            waiter = queue.popleft()
            if queue:
                group.turns.append(user)  # back of the line: everyone else goes first
            else:
                del group.queues[user]
            if waiter.future.done():  # cancelled while we held the lock
                continue
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # its event loop is gone (a finished CLI run): nobody to serve
                continue
            waiter.replica = replica
            replica.outstanding += 1

    # -- health ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Restart crashed workers, probe every replica, take failing ones out of routing and
        restart hung local workers (the checker thread calls this every health interval)."""
        for group in self._groups.values():
            for replica in group.replicas:
                self._check_replica(group, replica)
            self.metrics.healthy_replicas.labels(group.name).set(sum(r.healthy for r in group.replicas))

    def _check_replica(self, group: _Group, replica: Replica) -> None:
        ok = probe_and_heal(group.name, replica, self.metrics)
        with self._mu:
            returned, left = ok and not replica.healthy, replica.healthy and not ok
            replica.healthy = ok
            replica.failures = 0 if ok else replica.failures + 1
            if returned:
                self._dispatch(group)  # waiters may have queued while it was out of routing
                self.metrics.queued.labels(group.name).set(group.waiting)
        if left or returned:
            log.warning(
                "%s replica %s %s",
                group.name,
                replica.backend.replica,
                "failed its health check; out of routing until it passes" if left else "is healthy again",
            )
        count_restarts(group.name, replica, self.metrics)

    def _check_loop(self) -> None:
        # A first round at once: /readyz should not call a replica that never answered healthy
        # for a whole interval after start (a remote server has nothing to load, so no start check).
        while True:
            self.check()
            if self._stop.wait(self.health_interval_s):
                return

    def close(self) -> None:
        """Stop the health checker and close every replica; idempotent."""
        self._stop.set()
        if self._checker is not None:
            self._checker.join(timeout=self.health_interval_s + 5)
            self._checker = None
        for group in self._groups.values():
            for replica in group.replicas:
                replica.backend.close()


def _resolve(waiter: _Waiter) -> None:
    if not waiter.future.done():
        waiter.future.set_result(waiter.replica)  # type: ignore[arg-type]


async def _close_quietly(stream: AsyncGenerator[Delta, None]) -> None:
    # The stream may have failed already; its error was reported where it happened.
    with contextlib.suppress(Exception):
        await stream.aclose()
