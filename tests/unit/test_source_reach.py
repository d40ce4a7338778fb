"""The rules behind a source's reach and readers, without servers: who may read an item when a run
names readers too, when narrowed readers make a failed item's copy go, and which addresses a git,
SQL or S3 source may connect to (a stand-in resolver, named so, plays DNS)."""

from __future__ import annotations

import pytest

from appliance.ingestion.pipeline import narrows, run_readers
from connectors._net import FetchRefused
from connectors._reach import Reach


def test_a_runs_readers_never_widen_an_items_own() -> None:
    assert run_readers(("group:audit",), ("group:legal",), ()) == ("group:legal",)
    assert run_readers(("user:kim",), ("group:board", "user:kim"), ()) == ("user:kim",)  # narrower
    assert run_readers(("group:staff",), ("*",), ()) == ("group:staff",)
    assert run_readers(("group:staff",), (), ("group:hr",)) == ("group:staff",)
    assert run_readers((), ("group:legal",), ("group:hr",)) == ("group:legal",)
    assert run_readers((), (), ("group:hr",)) == ("group:hr",)


def test_what_narrows_readers() -> None:
    assert narrows(["*"], ["group:board"])
    assert narrows(["group:a", "group:b"], ["group:a"])
    assert narrows(["group:a"], ["group:b"])
    assert not narrows(["group:a"], ["group:a", "group:b"])
    assert not narrows(["group:a"], ["*"])
    assert not narrows(["group:a"], ["group:a"])


def test_reach_checks_every_address_and_pins_the_first() -> None:
    def stand_in_resolver(host: str, port: int) -> list[str]:
        return {
            "db.example": ["93.184.215.14", "93.184.215.15"],
            "mixed.example": ["93.184.215.14", "10.0.0.7"],
        }[host]

    reach = Reach(resolver=stand_in_resolver)
    assert reach.address("db.example", 5432) == "93.184.215.14"
    with pytest.raises(FetchRefused, match="private") as refused:
        reach.address("mixed.example", 5432)
    assert "10.0.0.7" not in refused.value.message
    for literal, problem in (
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("::ffff:10.1.1.1", "private"),
    ):
        with pytest.raises(FetchRefused, match=problem):
            reach.address(literal, 80)
    # Allowed by name or range; a metadata address only when named exactly.
    assert Reach(["mixed.example"], resolver=stand_in_resolver).address("mixed.example", 1) == "93.184.215.14"
    assert Reach(["10.0.0.0/8"]).address("10.2.3.4", 1) == "10.2.3.4"
    with pytest.raises(FetchRefused):
        Reach(["169.254.0.0/16"]).address("169.254.169.254", 80)


def test_at_connect_only_approved_or_public_addresses_pass() -> None:
    reach = Reach(["10.9.0.0/16"], resolver=lambda host, port: ["10.9.0.5"])
    reach.address("intranet.example", 443)
    assert reach.permits_connect("10.9.0.5") and reach.permits_connect("10.9.7.7")
    assert reach.permits_connect("93.184.215.14")
    assert not reach.permits_connect("127.0.0.1") and not reach.permits_connect("169.254.169.254")
    assert not reach.permits_connect("192.168.1.1")
