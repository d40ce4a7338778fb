"""Usage counters per user, group and key per day; quotas answer 429 with Retry-After."""

from __future__ import annotations

import csv
import io

import pytest

from appliance.db import make_engine
from appliance.domain import Overloaded, Principal
from appliance.metering import Metering, to_csv


@pytest.fixture()
def metering(db_url: str) -> Metering:
    return Metering(make_engine(db_url))


ALICE = Principal("alice", "employee", ("eng", "company"), key_id=7)
BOB = Principal("bob", "employee", ("company",))


def test_usage_is_counted_per_user_group_and_key(metering: Metering) -> None:
    metering.record_usage(ALICE, 100, 20)
    metering.record_usage(ALICE, 50, 5)
    metering.record_usage(BOB, 10, 1)
    rows = {r["subject"]: r for r in metering.report()}
    assert rows["user:alice"]["requests"] == 2
    assert (rows["user:alice"]["prompt_tokens"], rows["user:alice"]["completion_tokens"]) == (150, 25)
    assert rows["key:7"]["total_tokens"] == 175
    assert rows["group:eng"]["total_tokens"] == 175
    assert rows["group:company"]["total_tokens"] == 186 and rows["group:company"]["requests"] == 3
    assert "user:bob" in rows and "key:None" not in rows
    only_bob = metering.report(subjects=["user:bob"])
    assert [r["subject"] for r in only_bob] == ["user:bob"]
    assert {r["subject"] for r in metering.report(kind="group")} == {"group:eng", "group:company"}
    parsed = list(csv.DictReader(io.StringIO(to_csv(metering.report()))))
    assert {r["subject"] for r in parsed} == set(rows) and parsed[0].keys() >= {"day", "total_tokens"}


def test_daily_token_quota_of_a_group_blocks_its_members(metering: Metering) -> None:
    metering.set_quota("group:eng", tokens_per_day=100)
    metering.check_quota(ALICE)  # nothing spent yet
    metering.record_usage(ALICE, 90, 20)
    with pytest.raises(Overloaded) as err:
        metering.check_quota(ALICE)
    assert "group:eng" in err.value.message and err.value.retry_after >= 1
    metering.check_quota(BOB)  # not in eng
    metering.check_quota(Principal("root", "admin"))  # admins are never limited


def test_requests_per_minute(metering: Metering) -> None:
    metering.set_quota("user:bob", requests_per_minute=3)
    for _ in range(3):
        metering.check_quota(BOB)
    with pytest.raises(Overloaded) as err:
        metering.check_quota(BOB)
    assert 0 < err.value.retry_after <= 60
    metering.check_quota(ALICE)


def test_default_user_quota_from_settings(db_url: str) -> None:
    m = Metering(make_engine(db_url), default_tokens_per_day=10)
    m.record_usage(BOB, 10, 0)
    with pytest.raises(Overloaded):
        m.check_quota(BOB)
    m.set_quota("user:bob", tokens_per_day=1000)  # an explicit quota overrides the default
    m.check_quota(BOB)


def test_concurrent_recording_loses_nothing(metering: Metering) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: metering.record_usage(ALICE, 3, 1), range(40)))
    rows = {r["subject"]: r for r in metering.report()}
    assert rows["user:alice"]["requests"] == 40 and rows["group:eng"]["total_tokens"] == 160


def test_token_quota_reservations_cannot_overshoot(metering: Metering) -> None:
    """Concurrent generations hold their most (prompt + max_tokens) before they start: together
    they never pass a daily quota, of the user or of any of its groups."""
    metering.set_quota("group:eng", tokens_per_day=1000)
    metering.record_usage(ALICE, 100, 0)
    first = metering.reserve(ALICE, 500)
    assert first is not None and first.subjects == ("group:eng",)
    with pytest.raises(Overloaded) as err:
        metering.reserve(ALICE, 500)  # 100 spent + 500 held + 500 > 1000
    assert "group:eng" in err.value.message and "held" in err.value.message
    second = metering.reserve(ALICE, 400)  # 100 + 500 + 400 fits exactly
    metering.release(first)
    metering.record_usage(ALICE, 50, 150)  # what the first one really used
    third = metering.reserve(ALICE, 100)  # 300 spent + 400 held + 100
    with pytest.raises(Overloaded):
        metering.reserve(ALICE, 201)
    metering.release(second)
    metering.release(third)
    assert metering.reserve(ALICE, 700) is not None  # nothing held any more: 300 + 700
    assert metering.reserve(BOB, 10**9) is None  # no quota of bob's: nothing to hold
    assert metering.reserve(Principal("root", "admin"), 10**9) is None  # admins are not limited


def test_setting_one_quota_concurrently_leaves_one_row(metering: Metering) -> None:
    """Replicas setting the same quota at once (an upsert, not delete + insert): no key collision."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: metering.set_quota("user:bob", tokens_per_day=n + 1), range(40)))
    (row,) = metering.list_quotas()
    assert row["subject"] == "user:bob" and 1 <= row["tokens_per_day"] <= 40
    metering.set_quota("user:bob", requests_per_minute=5)  # replaces the whole quota, as before
    assert metering.list_quotas() == [
        {"subject": "user:bob", "tokens_per_day": None, "requests_per_minute": 5}
    ]
