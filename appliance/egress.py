"""Offline by construction.

``prepare_offline_env()`` runs first thing in every entry point (CLI, parser workers): it tells the
libraries we depend on never to phone home. ``install_guard()`` goes further and refuses, inside
this process, any outbound connection that is not to loopback or an allow-listed host, by way of a
``sys.addaudithook`` on ``socket.connect`` — so a library that ignores the variables still cannot
send a byte out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

# Variables honoured by the libraries in our stack; each stops a download or a telemetry ping.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def prepare_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


class EgressBlocked(PermissionError):
    pass


_state: dict[str, object] = {"installed": False, "networks": [], "hosts": set()}


def _parse_allow(allow: Iterable[str]) -> tuple[list[ipaddress._BaseNetwork], set[str]]:
    networks: list[ipaddress._BaseNetwork] = []
    hosts: set[str] = set()
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower())
            # A named host is allowed by the addresses it resolves to now; resolution of a name we
            # were told to allow is itself permitted.
            try:
                for info in socket.getaddrinfo(entry, None):
                    networks.append(ipaddress.ip_network(info[4][0]))
            except OSError:
                log.warning("egress allow-list host %s does not resolve", entry)
    return networks, hosts


def is_allowed(address: object) -> bool:
    """Whether a ``socket.connect`` target may be reached. Unix sockets always may."""
    if not isinstance(address, tuple) or not address:
        return True
    host = str(address[0])
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower() in ("localhost",) or host.lower() in _state["hosts"]  # type: ignore[operator]
    if ip.is_loopback or ip.is_unspecified:
        return True
    return any(ip in net for net in _state["networks"])  # type: ignore[attr-defined]


def _hook(event: str, args: tuple) -> None:
    if event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and not is_allowed(address):
            raise EgressBlocked(f"outbound connection to {address!r} refused: the appliance runs offline")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host and not _resolvable(str(host)):
            raise EgressBlocked(f"name lookup of {host!r} refused: the appliance runs offline")


def _resolvable(host: str) -> bool:
    lowered = host.lower()
    if lowered in ("localhost", "localhost.localdomain") or lowered in _state["hosts"]:  # type: ignore[operator]
        return True
    try:
        ipaddress.ip_address(lowered.split("%", 1)[0])
        return True  # a literal address; connect() decides
    except ValueError:
        return False


def install_guard(allow: Iterable[str] = ()) -> None:
    """Refuse non-loopback connections from now on. Audit hooks can't be removed; calling again
    only widens the allow-list."""
    networks, hosts = _parse_allow(allow)
    _state["networks"] = [*_state["networks"], *networks]  # type: ignore[misc]
    _state["hosts"] = set(_state["hosts"]) | hosts  # type: ignore[arg-type,call-overload]
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True


def guard_installed() -> bool:
    return bool(_state["installed"])
