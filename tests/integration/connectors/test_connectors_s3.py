"""S3 connector against moto_server speaking the S3 protocol on loopback."""

from __future__ import annotations

import uuid

import pytest

import connectors
from connectors.s3 import S3Connector, S3Error
from tests.integration.connectors.conftest import S3

pytestmark = pytest.mark.services

LOOPBACK = ["127.0.0.1"]  # moto listens on loopback, which a source reaches only when allowed


@pytest.fixture
def bucket(s3_server: S3) -> str:
    name = f"kb-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="docs/leave.md", Body=b"# Leave\n30 days")
    client.put_object(
        Bucket=name, Key="docs/pay.md", Body=b"# Pay\nmonthly", Metadata={"acl": "group:finance, user:alice"}
    )
    client.put_object(Bucket=name, Key="docs/image.png", Body=b"\x89PNG")
    client.put_object(Bucket=name, Key="other/skip.md", Body=b"outside the prefix")
    return name


def test_discover_fetch_versions_and_acl_metadata(s3_server: S3, bucket: str) -> None:
    c = connectors.for_source(
        f"s3://{bucket}/docs/",
        extensions=[".md"],
        acl=["group:staff"],
        **s3_server.options,
        allow_private=LOOPBACK,
    )
    assert isinstance(c, S3Connector) and c.root == f"s3://{bucket}/docs/@{s3_server.endpoint}"
    items = {i.uri: i for i in c.discover()}
    assert set(items) == {f"s3://{bucket}/docs/leave.md", f"s3://{bucket}/docs/pay.md"}
    leave, pay = items[f"s3://{bucket}/docs/leave.md"], items[f"s3://{bucket}/docs/pay.md"]
    assert leave.acl == ("group:staff",), "no metadata: the source's default"
    assert pay.acl == ("group:finance", "user:alice"), "x-amz-meta-acl wins for its object"
    assert c.fetch(leave) == b"# Leave\n30 days"
    assert leave.version and '"' not in leave.version

    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="docs/leave.md", Body=b"# Leave\n31 days")
    client.delete_object(Bucket=bucket, Key="docs/pay.md")
    again = {i.uri: i for i in c.discover()}
    assert set(again) == {leave.uri}
    assert again[leave.uri].version != leave.version
    assert c.fetch(again[leave.uri]) == b"# Leave\n31 days"

    # options() carries no credentials; build() with them from the settings rebuilds it.
    opts = c.options()
    assert "secret_access_key" not in opts and "access_key_id" not in opts
    rebuilt = connectors.build("s3", **opts, access_key_id="test", secret_access_key="test")
    assert rebuilt.root == c.root and [i.uri for i in rebuilt.discover()] == [leave.uri]


def test_missing_bucket_is_a_clear_error(s3_server: S3) -> None:
    c = connectors.for_source("s3://no-such-bucket-kb/", **s3_server.options, allow_private=LOOPBACK)
    with pytest.raises(S3Error, match="NoSuchBucket"):
        list(c.discover())


def test_an_object_over_the_size_limit_is_refused_before_its_body_is_read(s3_server: S3, bucket: str) -> None:
    from appliance.domain import FileTooLarge, SourceItem

    s3_server.client().put_object(Bucket=bucket, Key="docs/big.md", Body=b"z" * (2 * 2**20))
    c = connectors.for_source(
        f"s3://{bucket}/docs/",
        extensions=[".md"],
        max_file_bytes=2**20,
        **s3_server.options,
        allow_private=LOOPBACK,
    )
    items = {i.uri: i for i in c.discover()}
    big = items[f"s3://{bucket}/docs/big.md"]
    assert big.metadata["size"] == 2 * 2**20
    with pytest.raises(
        FileTooLarge, match=r"file is 2.0 MiB, over the 1 MiB limit \(ingestion.max_file_mb\)"
    ):
        c.fetch(big)  # from the listed size: no GET at all
    # Without a listed size (an item from elsewhere), the GET's ContentLength decides.
    with pytest.raises(FileTooLarge, match="file is 2.0 MiB"):
        c.fetch(SourceItem(uri=big.uri, version=big.version))
    assert c.fetch(items[f"s3://{bucket}/docs/leave.md"]) == b"# Leave\n30 days"
