"""Secrets at rest and in answers: the data dir's private key files, source specs and options that
hold passwords (stored encrypted with Fernet under ``<data dir>/secrets/sources.key``), and the
redaction of such values wherever they are shown (API answers, job details, the audit log).

What counts as secret: the password of a URL's user info (``postgresql://u:PW@host``), query
parameters and option keys named like a credential (password, secret, token, key, signature ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

MASK = "***"
SEALED_PREFIX = "fernet:"
SOURCES_KEY_FILE = "sources.key"
_SEALED_OPTIONS = "_sealed"

_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|"
    r"signature|sig|auth)$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&#;\s]+)")


def secrets_dir(data_dir: Path) -> Path:
    """``<data dir>/secrets``, created 0700."""
    path = data_dir / "secrets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path, make: Callable[[], str]) -> str:
    """The text of a 0600 file, written once with ``make()`` if missing. Written aside, then linked
    into place: two processes starting together agree on one value, and nobody reads half a file."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()


def redact(value: Any) -> Any:
    """``value`` with every secret it holds masked: in strings (URL passwords, credential query
    parameters), and in dicts (values under credential-like keys), recursively."""
    if isinstance(value, str):
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", value)
        return _QUERY_SECRET.sub(
            lambda m: m["head"] + (MASK if _SECRET_NAME.search(m["name"]) else m["value"]), text
        )
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_NAME.search(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def holds_secret(value: Any) -> bool:
    return redact(value) != value


class SecretBox:
    """Encrypts what must be stored but not read by whoever reads the DB (source specs with
    passwords). The key is a 0600 file in the data dir's secrets, made on first use."""

    def __init__(self, key_file: Path, key: str | None = None) -> None:
        self.key_file = key_file
        self._fernet: Fernet | None = None
        if key is not None:
            try:  # a bad configured key fails at start, not at the first sealed source
                self._fernet = Fernet(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError("auth.secrets_key is not a Fernet key (32 bytes, URL-safe base64)") from None

    @classmethod
    def for_data_dir(cls, data_dir: Path, key: str | None = None) -> SecretBox:
        """The box of ``key`` (``auth.secrets_key``, shared by replicas and workers), or of the
        data dir's own key file, made on first use."""
        return cls(data_dir / "secrets" / SOURCES_KEY_FILE, key)

    def _box(self) -> Fernet:
        if self._fernet is None:
            self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = private_file(self.key_file, lambda: Fernet.generate_key().decode("ascii"))
            self._fernet = Fernet(key.encode("ascii"))
        return self._fernet

    def seal(self, text: str) -> str:
        return SEALED_PREFIX + self._box().encrypt(text.encode("utf-8")).decode("ascii")

    def unseal(self, text: str) -> str:
        """The plain text of a sealed value; anything else (rows from before sealing) as it is."""
        if not text.startswith(SEALED_PREFIX):
            return text
        try:
            return self._box().decrypt(text[len(SEALED_PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError(
                f"cannot decrypt a stored secret with this key ({self.key_file} or auth.secrets_key): "
                "every replica and worker needs the same one"
            ) from None

    def seal_spec(self, spec: str | None) -> str | None:
        """A source spec as stored: sealed when it holds a secret, else plain (readable in the DB)."""
        return self.seal(spec) if spec and holds_secret(spec) else spec

    def seal_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if not holds_secret(options):
            return options
        return {_SEALED_OPTIONS: self.seal(json.dumps(options))}

    def unseal_options(self, stored: dict[str, Any]) -> dict[str, Any]:
        if set(stored) != {_SEALED_OPTIONS}:
            return stored
        opened: dict[str, Any] = json.loads(self.unseal(stored[_SEALED_OPTIONS]))
        return opened
