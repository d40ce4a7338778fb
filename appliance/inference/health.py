"""Health of one replica of the pool: probe it, restart a crashed or hung local worker, count
restarts. The pool (pool.py) calls these from its checker thread and decides routing from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.inference.base import InferenceBackend
from appliance.observability import Metrics

log = logging.getLogger(__name__)

# A health probe is one small request; a replica that can't answer it in this long is not going
# to answer a user either. Short, because the checker probes the replicas one after another.
PROBE_TIMEOUT_S = 2.0
# Probes a local worker may fail in a row, alive, before it counts as hung and is restarted. One
# miss could be a long prefill starving the worker's event loop; restarting costs a model load.
HUNG_AFTER = 3


@dataclass
class Replica:
    backend: InferenceBackend
    slots: int
    outstanding: int = 0
    restarts: int = 0
    healthy: bool = True  # the last health probe passed (no probe yet counts as passed)
    failures: int = 0  # health probes failed in a row


def alive(replica: Replica) -> bool:
    process = replica.backend.process
    return process is None or process.alive()


def probe(backend: InferenceBackend) -> bool:
    try:
        return backend.probe(PROBE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a probe that raises is a failed probe
        log.debug("health probe of %s raised", backend.name, exc_info=True)
        return False


def probe_and_heal(model: str, replica: Replica, metrics: Metrics) -> bool:
    """Restart a crashed local worker, probe the replica, and restart a local worker that is alive
    but failed ``HUNG_AFTER`` probes in a row (probing it again then). True: the probe passed."""
    backend = replica.backend
    process = backend.process  # None for a remote backend: nothing of it to restart here
    if process is not None:
        try:
            process.ensure_running()
        except Exception:  # noqa: BLE001 - logged; retried at the next interval
            log.exception("restarting a worker of %s failed", model)
    ok = probe(backend)
    if not ok:
        metrics.health_failures.labels(model).inc()
    if not ok and process is not None and replica.failures + 1 >= HUNG_AFTER and process.alive():
        # Alive but silent for HUNG_AFTER probes: deadlocked or stopped, and it holds its
        # slot forever. Its request, if any, ends with a 503 when the connection breaks.
        log.warning(
            "%s replica %s answered none of %d health checks; restarting it",
            model,
            backend.replica,
            HUNG_AFTER,
        )
        try:
            process.restart()
        except Exception:  # noqa: BLE001 - logged; retried at the next interval
            log.exception("restarting a hung worker of %s failed", model)
        ok = probe(backend)
    return ok


def count_restarts(model: str, replica: Replica, metrics: Metrics) -> None:
    """Restarts happen in the checker or on the request path; count them from the process's starts."""
    process = replica.backend.process
    starts = process.starts if process is not None else 1
    if starts - 1 > replica.restarts:
        metrics.worker_restarts.labels(model).inc(starts - 1 - replica.restarts)
        replica.restarts = starts - 1
