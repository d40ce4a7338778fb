"""Raw HTTP probes a normal client cannot send: a chunked request body that never ends.

httpx writes the whole body before it reads the answer, so a server that answers early (401,
413) and closes looks like a broken pipe to it. This client sends chunks until the server answers
or ``max_bytes`` went out, and reports what came back. Used by bench/security.py and the tests.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass

CHUNK = 64 * 1024


@dataclass
class ProbeResult:
    status: int | None  # None: no answer before max_bytes were sent (the server kept reading)
    sent: int
    body: bytes


def endless_chunked(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    max_bytes: int = 64 * 2**20,
    timeout_s: float = 30.0,
    prefix: bytes = b"",
) -> ProbeResult:
    """POST ``path`` with a chunked body of ``prefix`` then zeros, never terminated, until the
    server answers or ``max_bytes`` were sent; then wait up to ``timeout_s`` for an answer."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sent = 0
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        block = b"\0" * CHUNK
        first = prefix
        while sent < max_bytes:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            data = first or block
            first = b""
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            except OSError:  # the server answered and closed while we were writing
                break
            sent += len(data)
        return _read_answer(sock, sent, timeout_s)
    finally:
        sock.close()


def _read_answer(sock: socket.socket, sent: int, timeout_s: float) -> ProbeResult:
    sock.settimeout(timeout_s)
    received = b""
    try:
        while not _complete(received):
            part = sock.recv(65536)
            if not part:
                break
            received += part
    except OSError:
        pass  # a timeout (no answer) or a reset after the answer arrived
    if not received.startswith(b"HTTP/"):
        return ProbeResult(None, sent, b"")
    status = int(received.split(b" ", 2)[1])
    return ProbeResult(status, sent, received.partition(b"\r\n\r\n")[2])


def _complete(received: bytes) -> bool:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False  # no length: read until the server closes
