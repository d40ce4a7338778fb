"""S3-compatible buckets (AWS, MinIO, Ceph RGW, ...): every object under a prefix.

Version is the object's ETag. Access rules may ride on the object itself as user metadata
``x-amz-meta-acl`` (boto3: ``Metadata={"acl": "group:finance,user:alice"}``): a comma-separated
list of ``group:NAME`` / ``user:NAME``. Reading it costs one HEAD per object, so it can be turned off
(``read_acl_metadata``). Credentials come from the options (settings) or boto3's usual chain
(``AWS_ACCESS_KEY_ID``..., ``~/.aws``); they are never part of ``options()``.

With ``max_file_bytes``, an object whose listed size or ``ContentLength`` is over it fails before
its body is read, and the body is read with that cap (a size can change between list and get).

The endpoint's host is resolved and checked like a web host (``connectors._reach``: no loopback,
private, link-local or metadata address unless ``connectors.allow_private`` names it) before the
client is made, and every call runs inside ``Reach.active()``, which refuses at ``connect`` any
address that check did not approve: botocore resolving the name again can't reach another one.
With an endpoint, buckets are addressed by path, so a bucket name never becomes a host name.
Errors carry the S3 error code, not the server's message text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.domain import ApplianceError, FileTooLarge, InvalidRequest, SourceItem, read_capped
from connectors._reach import Reach


class S3Error(ApplianceError):
    status, code = 502, "s3_error"


def parse_acl(value: str) -> tuple[str, ...]:
    return tuple(sorted({p.strip() for p in value.split(",") if p.strip()}))


class S3Connector:
    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        extensions: Sequence[str] = (),
        read_acl_metadata: bool = True,
        acl: Sequence[str] = (),
        max_file_bytes: int | None = None,
        allow_private: Sequence[str] = (),
    ) -> None:
        if not bucket:
            raise InvalidRequest("an s3 source needs a bucket: s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.lstrip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._credentials = (access_key_id or None, secret_access_key or None)
        self.extensions = tuple(e.lower() for e in extensions)
        self.read_acl_metadata = read_acl_metadata
        self.acl = tuple(acl)
        self.max_file_bytes = max_file_bytes
        self.allow_private = list(allow_private)
        self.reach = Reach(allow_private)
        where = f"@{self.endpoint_url}" if self.endpoint_url else ""
        self.root = f"s3://{bucket}/{self.prefix}{where}"
        self._client: Any = None

    def options(self) -> dict[str, object]:
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "extensions": list(self.extensions),
            "read_acl_metadata": self.read_acl_metadata,
            "acl": list(self.acl),
            "allow_private": self.allow_private,
        }

    def hosts(self) -> list[str]:
        if self.endpoint_url:
            return [urlsplit(self.endpoint_url).hostname or ""]
        region = self.region or "us-east-1"
        return [f"{self.bucket}.s3.{region}.amazonaws.com", f"s3.{region}.amazonaws.com"]

    def local_paths(self) -> list[Path]:
        return []

    def close(self) -> None:
        """Drop the client and its connection pool; a later call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - boto3 is a dependency
                raise ApplianceError("the s3 connector needs boto3: pip install boto3") from exc
            self._check_endpoint()
            key, secret = self._credentials
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                    # A proxy from the environment would be a way around the address checks.
                    proxies={},
                ),
            )
        return self._client

    def _check_endpoint(self) -> None:
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidRequest(f"not an http(s) S3 endpoint: {self.endpoint_url}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self.reach.address(parts.hostname, port, f"the S3 endpoint of {self.root}")
            return
        for host in self.hosts():
            self.reach.address(host, 443, f"the S3 endpoint of {self.root}")

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        try:
            with self.reach.active():
                return fn(**kwargs)
        except ClientError as exc:
            # The code only: a server's message text is its own words, which a source must not relay.
            err = exc.response.get("Error", {})
            raise S3Error(f"s3 {what}: {err.get('Code') or 'error'}") from exc
        except (ConnectionError, HTTPClientError) as exc:
            # botocore's text names the address it tried.
            raise S3Error(f"s3 {what}: could not reach the endpoint of {self.root}") from exc
        except BotoCoreError as exc:
            raise S3Error(f"s3 {what}: {exc}") from exc

    def discover(self) -> Iterator[SourceItem]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in self._call(f"list s3://{self.bucket}/{self.prefix}", lambda: list(pages)):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/") or (self.extensions and not key.lower().endswith(self.extensions)):
                    continue
                acl = self.acl
                metadata: dict[str, Any] = {"filename": key.rsplit("/", 1)[-1], "size": obj.get("Size")}
                if self.read_acl_metadata:
                    head = self._call(f"head {key}", self.client.head_object, Bucket=self.bucket, Key=key)
                    if value := head.get("Metadata", {}).get("acl"):
                        acl = parse_acl(value)
                        metadata["acl_from"] = "x-amz-meta-acl"
                yield SourceItem(
                    uri=f"s3://{self.bucket}/{key}",
                    version=str(obj.get("ETag", "")).strip('"'),
                    acl=acl,
                    metadata=metadata,
                )

    def fetch(self, item: SourceItem) -> bytes:
        key = item.uri.removeprefix(f"s3://{self.bucket}/")
        limit = self.max_file_bytes
        listed = item.metadata.get("size")
        if limit is not None and isinstance(listed, int) and listed > limit:
            raise FileTooLarge(limit, listed)  # not even a GET
        response = self._call(f"get {key}", self.client.get_object, Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            declared = response.get("ContentLength")
            if limit is not None and isinstance(declared, int) and declared > limit:
                raise FileTooLarge(limit, declared)
            data: bytes = self._call(f"read {key}", read_capped, read=body.read, limit=limit)
            return data
        finally:
            body.close()  # a refused body is dropped with its connection, not downloaded
