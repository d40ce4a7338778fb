"""Ingestion jobs as HTML progress bars, polled by the Sources page's ``gr.Timer``.

``gr.Progress`` does not work with generators and would tie the bar to the request that started
the job; the jobs service already keeps live progress (seen, done, failed, chunks, rate, ETA) for
any job, so the page asks it every tick and draws this. Everything from a job (paths, URLs,
error text) is escaped.
"""

from __future__ import annotations

from typing import Any

from ui.admin.common import esc
from ui.i18n import t, term

SHOWN_FAILURES = 5


def _share(job: dict[str, Any]) -> float:
    if job["status"] == "succeeded":
        return 1.0
    p = job.get("progress") or {}
    seen = int(p.get("seen") or 0)
    return min((int(p.get("done") or 0) + int(p.get("failed") or 0)) / seen, 1.0) if seen else 0.0


def _what(job: dict[str, Any]) -> str:
    detail = job.get("detail") or {}
    if "source" in detail:
        src = detail["source"]
        return str(src.get("spec") or src.get("options", {}).get("root") or src.get("kind"))
    if "sources" in detail:
        return ", ".join(map(str, detail["sources"]))
    return str(detail.get("filename") or detail.get("uri") or "")


def _eta(value: Any, lang: str = "en") -> str:
    if value is None:
        return t(lang, "c_eta", left="—")
    seconds = int(round(float(value)))
    if seconds >= 60:
        left = t(lang, "c_dur_min", m=seconds // 60, s=f"{seconds % 60:02d}")
    else:
        left = t(lang, "c_dur_s", s=seconds)
    return t(lang, "c_eta", left=left)


def _failures(job: dict[str, Any], lang: str = "en") -> str:
    result = job.get("result") or {}
    items = list(result.get("failed") or [])
    if not items and not job.get("error"):
        return ""
    rows = "".join(
        f"<li><code>{esc(f.get('uri'))}</code>: {esc(f.get('error'))}</li>" for f in items[:SHOWN_FAILURES]
    )
    more = (
        f"<li>{esc(t(lang, 'c_more', n=len(items) - SHOWN_FAILURES))}</li>"
        if len(items) > SHOWN_FAILURES
        else ""
    )
    error = f'<p class="kb-job-error">{esc(job["error"])}</p>' if job.get("error") else ""
    return f'{error}<ul class="kb-job-failures">{rows}{more}</ul>'


def job_card(job: dict[str, Any], lang: str = "en") -> str:
    p = job.get("progress") or {}
    share = _share(job)
    status = str(job["status"])
    result = job.get("result") or {}
    if status == "succeeded" and result:
        counts = t(
            lang,
            "c_job_done",
            added=result.get("added", 0),
            updated=result.get("updated", 0),
            unchanged=result.get("unchanged", 0),
            deleted=result.get("deleted", 0),
            chunks=result.get("chunks", 0),
            failed=len(result.get("failed") or []),
        )
    else:
        counts = t(
            lang,
            "c_job_running",
            items=p.get("done", 0) + p.get("failed", 0),
            seen=p.get("seen", 0),
            chunks=p.get("chunks", 0),
            docs_s=p.get("rate_docs_s", 0),
            chunks_s=p.get("rate_chunks_s", 0),
            eta=_eta(p.get("eta_s"), lang),
            failed=p.get("failed", 0),
        )
    current = f'<div class="kb-job-current">{esc(p.get("current"))}</div>' if p.get("current") else ""
    return (
        f'<div class="kb-job" data-job="{esc(job["id"])}" data-status="{esc(status)}" '
        f'data-source="{esc(job.get("source_id") or "")}">'
        f'<div class="kb-job-head"><b>{esc(term(lang, "c_jk_", job["kind"]))}</b> → {esc(job["collection"])} '
        f'<span class="kb-job-status kb-{esc(status)}">{esc(term(lang, "c_js_", status))}</span> '
        f'<span class="kb-job-what">{esc(_what(job))}</span></div>'
        f'<div class="kb-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{round(share * 100)}"><div class="kb-bar-fill" style="width:{share * 100:.1f}%">'
        f"</div></div>"
        f'<div class="kb-job-counts">{esc(counts)}</div>{current}{_failures(job, lang)}</div>'
    )


def jobs_html(jobs: list[dict[str, Any]], lang: str = "en") -> str:
    if not jobs:
        return f'<div class="kb-jobs kb-empty">{esc(t(lang, "c_jobs_none"))}</div>'
    return '<div class="kb-jobs">' + "".join(job_card(j, lang) for j in jobs) + "</div>"
