"""Where git, SQL and S3 sources may connect: the web connector's address rules (``_net``) for
clients that do their own connecting (a git child process, libpq in C, botocore's urllib3).

``Reach.address(host, port)`` resolves a host name once, refuses it when any of its addresses is
loopback, private, link-local, shared, reserved or a metadata endpoint (unless
``connectors.allow_private`` names the host or a range), and returns the address the caller must
connect to: each connector then pins that address in its client (``http.curloptResolve`` and ssh's
``HostName`` for git, libpq's ``hostaddr``), so a second DNS answer can't swap in another target.
Clients that connect from Python (botocore, pure-Python drivers) run inside ``Reach.active()``: an
audit hook on ``socket.connect`` refuses any address this reach did not approve and the rules
would refuse, whatever their own resolver answered.

Refusals name the host as given, never the address it resolved to: a refusal must not become a
way to map the internal network.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

from connectors._net import (
    IP,
    AllowList,
    Resolver,
    address_problem,
    checked_addresses,
    ip_of,
    system_resolver,
)

ALLOW_SETTING = "connectors.allow_private"

_active: ContextVar[Reach | None] = ContextVar("connector_reach", default=None)
_hooked = False


class Reach:
    """The address rules of one source, with the addresses it has approved."""

    def __init__(self, allow_private: Sequence[str] = (), resolver: Resolver = system_resolver) -> None:
        self.allow = AllowList.parse(allow_private)
        # Tests replace it to stand in for DNS answers a test can't otherwise cause.
        self.resolver = resolver
        self.approved: set[IP] = set()

    def address(self, host: str, port: int, what: str = "") -> str:
        """The address to connect to for ``host``, once every address it resolves to passed."""
        checked = checked_addresses(
            host,
            port,
            label=what or host,
            allow=self.allow,
            resolver=self.resolver,
            allow_setting=ALLOW_SETTING,
        )
        self.approved.update(checked)
        return str(checked[0])

    def permits_connect(self, address: str) -> bool:
        """Whether a socket may connect to ``address`` (called at connect time, after any DNS)."""
        try:
            ip = ip_of(address)
        except ValueError:
            return False
        if ip in self.approved:
            return True
        problem = address_problem(ip)
        return problem is None or any(ip in net for net in self.allow.networks)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Refuse, in this thread, socket connections this reach would refuse."""
        _install_hook()
        token = _active.set(self)
        try:
            yield
        finally:
            _active.reset(token)


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "socket.connect":
        return
    reach = _active.get()
    if reach is None:
        return
    sock, address = args
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    if isinstance(address, tuple) and address and not reach.permits_connect(str(address[0])):
        # PermissionError: the clients treat it as a failed connection, not as a crash.
        raise PermissionError("connection refused by the source's address rules")


def _install_hook() -> None:
    global _hooked
    if not _hooked:
        sys.addaudithook(_hook)  # audit hooks can't be removed; it only acts inside active()
        _hooked = True
