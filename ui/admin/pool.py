"""Inference pool (admins): devices and placement (the verdicts of ``appliance doctor``), models
with their replicas and health, queue depth, and plots of time to first token and tokens/s over
the last hour.

The pool records TTFT and decode rate as Prometheus histograms (cumulative sums and counts), which
have no history. ``MetricsHistory`` keeps one: a sampler thread reads each model's sums and counts
every ``SAMPLE_S`` seconds and stores the mean of what was observed in between, in a ring buffer
one hour long. It starts with the first console page load, so the plots begin then.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

import gradio as gr
import pandas as pd

from appliance.domain import Forbidden
from ui.admin.common import Console, failed, table, yes_no

SAMPLE_S = 15.0
HOUR_S = 3600.0
REPLICA_HEADERS = [
    "c_h_model",
    "c_h_replica",
    "c_h_healthy",
    "c_h_in_use",
    "c_h_capacity",
    "c_h_waiting",
    "c_h_detail",
]
SERIES = {
    "ttft_s": "appliance_time_to_first_token_seconds",
    "tokens_per_s": "appliance_decode_tokens_per_second",
}


class MetricsHistory:
    """The last hour of TTFT and decode rate per model, sampled from the pool's histograms."""

    def __init__(self, registry: Any, models: Any, sample_s: float = SAMPLE_S) -> None:
        self.registry = registry
        self.models = models  # () -> model names
        self.sample_s = sample_s
        self.points: deque[dict[str, Any]] = deque(maxlen=int(HOUR_S / sample_s) + 1)
        self._last: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def sample(self, at: datetime | None = None) -> None:
        """Record the mean of each series since the previous sample (nothing when none was observed)."""
        at = at or datetime.now(UTC)
        for model in self.models():
            for series, metric in SERIES.items():
                total = self.registry.get_sample_value(f"{metric}_sum", {"model": model}) or 0.0
                count = self.registry.get_sample_value(f"{metric}_count", {"model": model}) or 0.0
                with self._lock:
                    before = self._last.get((model, series))
                    self._last[(model, series)] = (total, count)
                    if before is not None and count > before[1]:
                        mean = (total - before[0]) / (count - before[1])
                        self.points.append({"time": at, "model": model, "series": series, "value": mean})

    def frame(self, series: str) -> pd.DataFrame:
        with self._lock:
            rows = [p for p in self.points if p["series"] == series]
        return pd.DataFrame(rows, columns=["time", "model", "series", "value"])

    def start(self) -> None:
        if self._thread is not None:
            return
        self.sample()  # the baseline: the first interval's mean needs it

        def loop() -> None:
            while not self._stop.wait(self.sample_s):  # a sampling period, not a synchronisation
                try:
                    self.sample()
                except Exception:  # a failed sample leaves a gap in the plot, nothing else
                    continue

        self._thread = threading.Thread(target=loop, name="console-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def replica_rows(health: dict[str, Any], lang: str = "en") -> list[list[Any]]:
    rows = []
    for model, group in health.items():
        for i, r in enumerate(group["replicas"]):
            detail = {k: v for k, v in r.items() if k not in ("healthy", "outstanding")}
            rows.append(
                [
                    model,
                    i,
                    yes_no(lang, r["healthy"]),
                    r["outstanding"],
                    group["capacity"],
                    group["waiting"],
                    str(detail),
                ]
            )
    return rows


def build_pool(console: Console) -> dict[str, Any]:
    c = console.container
    history: dict[str, MetricsHistory] = {}
    tr = console.labels
    with gr.Row():
        refresh_btn = tr(gr.Button("Refresh", elem_id="kb-pool-refresh"), value="c_refresh_doctor")
    replicas = gr.Dataframe(
        headers=REPLICA_HEADERS, value=[], interactive=False, wrap=True, elem_id="kb-pool"
    )
    with gr.Row():
        ttft = tr(
            gr.LinePlot(x="time", y="value", color="model", title="Time to first token (s), last hour"),
            title="c_ttft_plot",
        )
        rate = tr(
            gr.LinePlot(x="time", y="value", color="model", title="Tokens/s, last hour"), title="c_rate_plot"
        )
    with tr(gr.Accordion("Devices and placement (doctor)", open=False), label="c_doctor"):
        doctor = gr.JSON(elem_id="kb-pool-doctor")
    status = gr.HTML()

    def snapshot(with_doctor: bool, lang: str = "en") -> list[Any]:
        pool = c.pool
        if "h" not in history:
            history["h"] = MetricsHistory(c.metrics.registry, lambda: list(pool.health()))
            history["h"].start()
        h = history["h"]
        shown: Any = gr.update()
        if with_doctor:  # a few probes and file checks: on demand, not on every page load
            from appliance.commands.doctor import collect

            checks = collect(c)
            shown = {k: checks[k] for k in ("accelerators", "placement", "models", "egress") if k in checks}
        rows = table(lang, REPLICA_HEADERS, replica_rows(pool.health(), lang))
        return [rows, h.frame("ttft_s"), h.frame("tokens_per_s"), shown]

    async def refresh(request: gr.Request) -> list[Any]:
        if not console.curator(request).is_admin:
            return [gr.update()] * 4
        return await asyncio.to_thread(snapshot, False, console.lang(request))

    async def on_refresh(request: gr.Request) -> list[Any]:
        try:
            if not console.curator(request).is_admin:
                raise Forbidden("this needs the admin role")
            return [*await asyncio.to_thread(snapshot, True, console.lang(request)), ""]
        except Exception as exc:
            return [gr.update()] * 4 + [failed(exc, console.lang(request))]

    refresh_btn.click(on_refresh, None, [replicas, ttft, rate, doctor, status])
    return {"refresh": refresh, "outputs": [replicas, ttft, rate, doctor]}
