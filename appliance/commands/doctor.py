"""``appliance doctor``: accelerators found, the placement chosen and why, model files, egress."""

from __future__ import annotations

import os
import platform
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import JsonOpt
from appliance.domain import ApplianceError
from appliance.egress import guard_installed

if TYPE_CHECKING:
    from appliance.container import Container

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def default_route(read: Any = None) -> bool:
    """Whether the kernel has a route off this machine (a default route or any non-loopback one)."""
    # Imported here, like the model catalog below: they cost start-up time every other command saves.
    from appliance.inference.accelerators import read_file

    read = read or read_file
    v4 = (read("/proc/net/route") or "").splitlines()[1:]
    if any(len(f := line.split()) > 1 and f[0] != "lo" and f[1] == "00000000" for line in v4):
        return True
    v6 = (read("/proc/net/ipv6_route") or "").splitlines()
    return any(line.split()[0] == "0" * 32 and line.split()[-1] != "lo" for line in v6 if line.split())


def egress_report(settings: Any) -> dict[str, Any]:
    route = default_route()
    guard = guard_installed()
    return {
        "guard": guard,
        "allow": settings.egress.allow,
        "route_off_host": route,
        "proxies": {k: os.environ[k] for k in _PROXY_VARS if os.environ.get(k)},
        # The process can reach the network only with the guard off (or an allow-list) and a route.
        "could_reach_network": route and (not guard or bool(settings.egress.allow)),
        "offline_env": {
            k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK")
        },
    }


def remote_check(settings: Any, name: str, url: str) -> dict[str, Any]:
    """A remote model is usable only if the egress guard lets the appliance reach its host."""
    host = urlsplit(url).hostname or ""
    out: dict[str, Any] = {"ok": bool(host), "remote": True, "name": name, "url": url}
    if not host:
        out["error"] = f"remote model {name!r} has no valid url"
    elif settings.egress.block and host not in ("localhost", "127.0.0.1", "::1", *settings.egress.allow):
        out |= {"ok": False, "error": f"add {host} to APPLIANCE_EGRESS__ALLOW to reach remote model {name!r}"}
    return out


def remote_checks(settings: Any, name: str, urls: list[str]) -> dict[str, Any]:
    """``remote_check`` of every server of a remote model (``urls``): the first that fails, else
    the first one's verdict, with all the URLs."""
    checks = [remote_check(settings, name, url) for url in urls]
    failed = next((c for c in checks if not c["ok"]), None)
    return failed or checks[0] | ({"urls": urls} if len(urls) > 1 else {})


def collect(container: Container) -> dict[str, Any]:
    """Every verdict `doctor` reports, with ``ok`` true when all of them pass."""
    from appliance.inference.accelerators import cpu_flags
    from appliance.models import resolve_embedding, resolve_spacy

    settings = container.settings
    data_dir = container.data_dir
    checks: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count()}
    checks["accelerators"] = [p.as_dict() for p in container.probes]
    models: dict[str, Any] = {}
    placements: list[dict[str, Any]] = []
    try:
        for req, placement, served in container.model_plan():
            models[f"llm:{req.name}"] = (
                {"ok": True, **req.entry.as_dict()}
                if req.entry
                else remote_checks(settings, req.name, served.urls or [served.url])
            )
            placements.append(placement.as_dict())
    except ApplianceError as exc:
        models["llm"] = {"ok": False, "error": exc.message}
    cfg = settings.models
    for label, resolve in (
        ("embedding", partial(resolve_embedding, cfg.embedding, cfg.embedding_name, data_dir / "models")),
        ("spacy", partial(resolve_spacy, cfg.spacy)),
    ):
        try:
            entry = resolve()
            models[label] = {"ok": True, "path": str(entry.path), "source": entry.source}
        except ApplianceError as exc:
            models[label] = {"ok": False, "error": exc.message}
    checks["models"] = models
    checks["placement"] = placements
    checks["egress"] = egress_report(settings)
    if any(p["backend"] == "llamacpp" for p in placements):
        # Imported here: the llama.cpp backend module is only needed when a model is placed on it.
        from appliance.inference.backends.llamacpp import build_report

        checks["llama_cpp"] = build_report(cpu_flags())
    checks["ok"] = (
        all(m["ok"] for m in models.values())
        and all(p["fits"] for p in placements)
        and checks.get("llama_cpp", {}).get("ok", True)
    )
    return checks


def human(checks: dict[str, Any]) -> str:
    lines = ["accelerators:"]
    for p in checks["accelerators"]:
        lines.append(f"  {p['platform']:7} {'found' if p['found'] else 'no   '}  {p['reason']}")
    lines.append("placement:")
    for p in checks["placement"]:
        where = (p["backend"] or "NOT PLACED") + (f" on {p['platform']}" if p["platform"] else "")
        lines.append(f"  {p['model']}: {where}{'' if p['fits'] else ' (does not fit)'}  - {p['reason']}")
    lines.append("models:")
    for k, v in checks["models"].items():
        lines.append(
            f"  {k:28} {'ok  ' if v['ok'] else 'FAIL'} {v.get('error') or v.get('path') or v.get('url')}"
        )
    if build := checks.get("llama_cpp"):
        state = "ok  " if build["ok"] else "FAIL"
        note = build.get("error") or build.get("hint") or "runs on this CPU"
        lines.append(f"llama.cpp build: {state} {' '.join(build['features']) or '?'}  - {note}")
    e = checks["egress"]
    lines.append(
        f"egress:   {'blocked except loopback' if e['guard'] else 'NOT blocked'}"
        f"{' + allow ' + ','.join(e['allow']) if e['allow'] else ''}; route off host: "
        f"{'yes' if e['route_off_host'] else 'no'}; could reach the network: "
        f"{'YES' if e['could_reach_network'] else 'no'}"
    )
    return "\n".join(lines)


def doctor(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Accelerators found, the placement chosen and why, model files, egress status."""
    cli = AppContext.of(ctx)
    checks = collect(cli.container)
    cli.emit(checks, as_json, human(checks))
    if not checks["ok"]:
        raise typer.Exit(1)
