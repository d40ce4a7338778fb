"""Users, nested groups, passwords, scoped keys and principal resolution against a real SQLite DB."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.db import make_engine
from appliance.domain import Conflict, InvalidRequest, NotFound, Unauthenticated
from appliance.security.acl import check_collection_scope, check_route_scope, filter_hash
from appliance.security.auth import KeyStore, issue_key, resolve_principal
from appliance.security.identity import IdentityStore


@pytest.fixture()
def stores(db_url: str) -> tuple[IdentityStore, KeyStore]:
    engine = make_engine(db_url)
    ids = IdentityStore(engine)
    ids.add_group("company")
    ids.add_group("engineering", parent="company")
    ids.add_group("platform", parent="engineering")
    ids.add_group("finance", parent="company")
    return ids, KeyStore(engine)


def test_groups_resolve_transitively(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, _ = stores
    ids.add_user("alice", "employee", ["platform"])
    assert ids.resolve_groups("alice") == ("company", "engineering", "platform")
    assert ids.principal("alice").acl_tokens() == [
        "*",
        "user:alice",
        "group:company",
        "group:engineering",
        "group:platform",
    ]


def test_cycles_are_refused(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, _ = stores
    with pytest.raises(Conflict, match="cycle"):
        ids.add_member("platform", "company", kind="group")
    with pytest.raises(Conflict, match="cycle"):
        ids.add_member("finance", "finance", kind="group")
    ids.add_member("finance", "platform", kind="group")  # a DAG with two parents is fine
    assert ids.get_group("platform")["parents"] == ["engineering", "finance"]


def test_membership_change_applies_to_next_resolution(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, keys = stores
    ids.add_user("bob", "employee", ["finance"])
    key = issue_key(keys, ids, "bob").key
    assert "group:finance" in resolve_principal(keys, ids, key).acl_tokens()
    ids.remove_member("finance", "bob")
    ids.add_member("platform", "bob")
    tokens = resolve_principal(keys, ids, key).acl_tokens()
    assert "group:finance" not in tokens and "group:engineering" in tokens


def test_passwords_are_argon2_and_checked(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, _ = stores
    ids.add_user("carol", "curator", password="correct horse")
    with ids.engine.connect() as conn:
        stored = conn.exec_driver_sql("select password_hash from users where name='carol'").scalar()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert ids.check_password("carol", "correct horse")
    assert not ids.check_password("carol", "wrong horse")
    assert not ids.check_password("nobody", "correct horse")
    ids.update_user("carol", disabled=True)
    assert not ids.check_password("carol", "correct horse")
    with pytest.raises(InvalidRequest, match="too short"):
        ids.add_user("dave", "employee", password="short")


def test_unknown_or_invalid_names(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, _ = stores
    with pytest.raises(NotFound):
        ids.add_user("erin", "employee", ["no-such-group"])
    with pytest.raises(InvalidRequest):
        ids.add_user("bad name", "employee")
    with pytest.raises(InvalidRequest):
        ids.add_user("frank", "root")
    with pytest.raises(NotFound):
        ids.principal("ghost")


def test_keys_hashed_scoped_expiring_revocable(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, keys = stores
    ids.add_user("app1", "app")
    ids.add_user("emp", "employee", ["finance"])
    issued = issue_key(keys, ids, "app1", collections=["hr"], routes=["/api/v1/search"])
    with keys.engine.connect() as conn:
        rows = conn.exec_driver_sql("select key_hash, prefix from api_keys").all()
    assert all(issued.key != r.key_hash and issued.key not in r.key_hash for r in rows)
    p = resolve_principal(keys, ids, issued.key)
    assert (p.role, p.collections, p.routes) == ("app", ("hr",), ("/api/v1/search",))
    check_route_scope(p, "/api/v1/search")
    with pytest.raises(Exception, match="may call only"):
        check_route_scope(p, "/api/v1/ask")
    with pytest.raises(Exception, match="may call only"):
        check_route_scope(p, "/api/v1/searchx")
    check_collection_scope(p, ["hr"], "default")
    with pytest.raises(Exception, match="collection 'default'"):
        check_collection_scope(p, [None], "default")

    with pytest.raises(InvalidRequest, match="cannot carry"):
        issue_key(keys, ids, "emp", role="admin")
    expired = issue_key(keys, ids, "emp", expires_days=1)
    with keys.engine.begin() as conn:
        conn.exec_driver_sql(f"update api_keys set expires_at='2000-01-01 00:00:00' where id={expired.id}")
    with pytest.raises(Unauthenticated):
        resolve_principal(keys, ids, expired.key)

    emp_key = issue_key(keys, ids, "emp")
    assert resolve_principal(keys, ids, emp_key.key).name == "emp"
    with pytest.raises(NotFound):  # another user's key id looks like a missing one
        keys.revoke(emp_key.id, owner="app1")
    keys.revoke(emp_key.id, owner="emp")
    with pytest.raises(Unauthenticated):
        resolve_principal(keys, ids, emp_key.key)


def test_disabled_user_and_lowered_role_apply_to_existing_keys(
    stores: tuple[IdentityStore, KeyStore],
) -> None:
    ids, keys = stores
    ids.add_user("cur", "curator", ["engineering"])
    key = issue_key(keys, ids, "cur").key
    assert resolve_principal(keys, ids, key).role == "curator"
    ids.update_user("cur", role="employee")
    assert resolve_principal(keys, ids, key).role == "employee"
    ids.update_user("cur", disabled=True)
    with pytest.raises(Unauthenticated, match="disabled"):
        resolve_principal(keys, ids, key)


def test_filter_hash_tracks_rights(stores: tuple[IdentityStore, KeyStore]) -> None:
    ids, _ = stores
    ids.add_user("h1", "employee", ["finance"])
    ids.add_user("h2", "employee", ["finance"])
    a, b = ids.principal("h1"), ids.principal("h2")
    assert filter_hash(a, "default") != filter_hash(b, "default")  # user:h1 vs user:h2
    before = filter_hash(a, "default")
    ids.add_member("platform", "h1")
    assert filter_hash(ids.principal("h1"), "default") != before
    assert filter_hash(ids.principal("h1"), "other") != filter_hash(ids.principal("h1"), "default")


def test_skeleton_key_table_gains_the_scope_columns(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the walking skeleton's api_keys table
        conn.execute(
            "CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, prefix VARCHAR(16) NOT NULL, "
            "key_hash VARCHAR(64) NOT NULL UNIQUE, user VARCHAR(128) NOT NULL, role VARCHAR(16) NOT NULL, "
            "created_at DATETIME NOT NULL, revoked_at DATETIME)"
        )
    engine = make_engine(db)
    keys = KeyStore(engine)
    IdentityStore(engine).add_user("old", "employee")
    issued = keys.create("old", "employee", collections=["a"], expires_days=1)
    assert keys.authenticate(issued.key).collections == ("a",)


def test_curating_follows_owner_groups_nested_and_the_key_scope(
    stores: tuple[IdentityStore, KeyStore],
) -> None:
    from appliance.domain import Principal
    from appliance.security.acl import can_curate, can_read

    ids, keys = stores
    ids.add_user("cur", "curator", ["platform"])  # platform < engineering < company
    ids.add_user("emp", "employee", ["engineering"])
    cur = resolve_principal(keys, ids, issue_key(keys, ids, "cur").key)
    assert can_curate(cur, ["engineering"], "eng")  # a parent group's collection: nested counts
    assert not can_curate(cur, ["finance"], "fin") and not can_curate(cur, [], "orphan")
    assert not can_curate(ids.principal("emp"), ["engineering"], "eng")  # readers are not curators
    assert can_curate(Principal("root", "admin"), [], "anything")
    scoped = resolve_principal(keys, ids, issue_key(keys, ids, "cur", collections=["docs"]).key)
    assert can_curate(scoped, ["engineering"], "docs") and not can_curate(scoped, ["engineering"], "eng")
    capped = resolve_principal(keys, ids, issue_key(keys, ids, "cur", role="employee").key)
    assert not can_curate(capped, ["engineering"], "eng")  # a key's role cap applies to curating
    # Reading a ledger row: the vector filter's rule plus the key's collection scope.
    assert can_read(cur, "eng", []) and can_read(cur, "eng", ["group:company"])
    assert not can_read(cur, "eng", ["group:finance"]) and not can_read(scoped, "eng", [])


def test_a_key_session_is_rechecked_by_id(stores: tuple[IdentityStore, KeyStore]) -> None:
    from appliance.security.auth import resolve_key_session

    ids, keys = stores
    ids.add_user("cur2", "curator", ["finance"])
    issued = issue_key(keys, ids, "cur2", role="employee", collections=["fin"], routes=["/"])
    p = resolve_key_session(ids, keys, issued.id, "cur2")
    assert (p.role, p.groups, p.key_id, p.collections) == (
        "employee",
        ("company", "finance"),
        issued.id,
        ("fin",),
    )
    with pytest.raises(Unauthenticated):  # the id of another user's key is no session of this one
        resolve_key_session(ids, keys, issued.id, "someone-else")
    with keys.engine.begin() as conn:
        conn.exec_driver_sql(f"update api_keys set expires_at='2000-01-01 00:00:00' where id={issued.id}")
    with pytest.raises(Unauthenticated):
        resolve_key_session(ids, keys, issued.id, "cur2")
    other = issue_key(keys, ids, "cur2")
    assert resolve_key_session(ids, keys, other.id, "cur2").role == "curator"
    keys.revoke(other.id)
    with pytest.raises(Unauthenticated):
        resolve_key_session(ids, keys, other.id, "cur2")


def test_skeleton_collections_table_gains_the_owners_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the collections table before owners existed
        conn.execute(
            "CREATE TABLE collections (name VARCHAR(64) PRIMARY KEY, default_acl JSON NOT NULL, "
            "description TEXT NOT NULL, created_at DATETIME NOT NULL)"
        )
        conn.execute("INSERT INTO collections VALUES ('old', '[]', '', '2024-01-01 00:00:00')")
    engine = make_engine(db)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select owners from collections where name='old'").scalar() is None


def test_conversation_turns_follow_current_read_access(db_url: str) -> None:
    """A turn keeps its citations' chunk text; handed back, it shows only what the caller may read
    now, and an answer that cited a lost document is withheld."""
    from appliance.db import documents, now
    from appliance.rag.conversations import WITHHELD, ConversationStore, new_id

    engine = make_engine(db_url)
    ids = IdentityStore(engine)
    ids.add_group("hr")
    ids.add_user("ann", "employee", ["hr"])
    with engine.begin() as conn:
        for doc, acl in (("d-public", []), ("d-hr", ["group:hr"])):
            conn.execute(
                documents.insert().values(
                    id=doc,
                    collection="default",
                    source="s",
                    uri=f"/{doc}",
                    title=doc,
                    version="1",
                    content_hash="",
                    acl=acl,
                    chunk_ids=["c"],
                    status="indexed",
                    updated_at=now(),
                )
            )
    store = ConversationStore(engine)
    conv = store.create("ann")
    cite = [
        {"index": 1, "uri": "/d-public", "document_id": "d-public", "text": "PUBLICTEXT", "cited": True},
        {"index": 2, "uri": "/d-hr", "document_id": "d-hr", "text": "HRSECRET", "cited": True},
    ]
    for n, citations in enumerate((cite, cite[:1])):
        store.record(
            "ann",
            {
                "id": new_id(),
                "conversation_id": conv["id"],
                "collection": "default",
                "question": f"q{n}",
                "query": f"q{n}",
                "answer": "HRSECRET [2]" if n == 0 else "PUBLICTEXT [1]",
                "citations": citations,
                "support": 1.0,
                "mode": "extractive",
                "fallback": False,
                "model": "m",
            },
        )
    seen = store.turns(conv["id"], "ann", reader=ids.principal("ann")).items
    assert [len(t["citations"]) for t in seen] == [2, 1] and seen[0]["answer"] == "HRSECRET [2]"
    ids.remove_member("hr", "ann")
    now_seen = store.turns(conv["id"], "ann", reader=ids.principal("ann")).items
    assert "HRSECRET" not in repr(now_seen)
    assert [c["index"] for c in now_seen[0]["citations"]] == [1] and now_seen[0]["answer"] == WITHHELD
    assert now_seen[1]["answer"] == "PUBLICTEXT [1]"  # untouched: it cited nothing lost
    assert "HRSECRET" not in repr(store.history(conv["id"], "ann", reader=ids.principal("ann")))
    with engine.begin() as conn:  # a deleted document is no longer readable either
        conn.execute(documents.delete().where(documents.c.id == "d-public"))
    assert store.turns(conv["id"], "ann", reader=ids.principal("ann")).items[1]["citations"] == []


def test_ledger_pages_by_access_in_sql(db_url: str) -> None:
    """The document list's page is chosen in SQL by the same rule as ``can_read`` (an empty ACL is
    every signed-in user; `_` in a name is no wildcard), on SQLite and PostgreSQL alike."""
    from appliance.domain import Principal
    from appliance.ingestion.state import DocumentRecord, Ledger
    from appliance.security.acl import can_read, filter_tokens

    ledger = Ledger(make_engine(db_url))
    acls = {
        "a": [],
        "b": ["group:hr"],
        "c": ["user:bob_x", "group:eng"],
        "d": ["user:bobax"],
        "e": ["*"],
        "f": ["group:eng"],
    }
    for name, acl in acls.items():
        collection = "other" if name == "f" else "kb"
        rec = DocumentRecord(
            name, collection, "/src", f"file:///{name}.md", name, "1", "h", acl, [], None, "", None
        )
        ledger.commit_write(rec)
    bob = Principal("bob_x", "employee", ("eng",))
    for who in (bob, Principal("hana", "employee", ("hr",)), Principal("root", "admin")):
        records, total = ledger.page("kb", filter_tokens(who), who.collections, 10, 0)
        expected = sorted(r.id for r in ledger.list("kb") if can_read(who, r.collection, r.acl))
        assert sorted(r.id for r in records) == expected and total == len(expected), who.name
    page, total = ledger.page(None, filter_tokens(bob), None, 2, 1)
    assert total == 4 and [r.id for r in page] == ["c", "e"]  # a c e f by URI, from the second
    scoped = Principal("bob_x", "employee", ("eng",), key_id=1, collections=("other",))
    assert [r.id for r in ledger.page(None, filter_tokens(scoped), scoped.collections, 10, 0)[0]] == ["f"]
