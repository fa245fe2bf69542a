"""Client over the real front door and a fake KV backend (separate processes)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest
import zmq

from concord.client import (
    MISSING,
    BulkDeleteResult,
    Client,
    DeleteResult,
    Event,
    EventsPage,
    KeysPage,
    Page,
    ValueWithMeta,
    ValueWithTTL,
)
from concord.errors import (
    ClientError,
    ConditionFailedError,
    ConfigError,
    ForbiddenError,
    InvalidKeyError,
    InvalidRequestError,
    NoLeaderError,
    NotFoundError,
    NotLeaderError,
    QuotaExceededError,
    RequestTimeoutError,
    ShuttingDownError,
    TooManyItemsError,
    UnauthorizedError,
    UnknownResultError,
    ValueTooLargeError,
)
from tests.client.fakes import FakeNode
from tests.net.netutil import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def client(a: FakeNode) -> Iterator[Client]:
    # NB: generous waits: these tests count requests, and the host is shared and busy.
    with Client(a.endpoint, timeout_s=10.0, attempt_timeout_s=3.0, shm=False) as c:
        yield c


def since(node: FakeNode, before: int, at_least: int = 0) -> list[dict[str, object]]:
    """The requests `node` saw after the first `before`; with `at_least`, waits for that many
    (needed after a silent attempt: the client may give up before its request arrives)."""
    return node.requests(before + at_least if at_least else 0)[before:]


def test_put_then_get_returns_value_when_backend_stores_it(client: Client, a: FakeNode) -> None:
    """A put's revision comes back, and get returns the value and its metadata."""
    revision = client.put("rt:k", {"x": [1, 2.5, "s", b"\x00"]})
    assert isinstance(revision, int) and revision > 0
    assert {"x": [1, 2.5, "s", b"\x00"]} == client.get("rt:k")
    assert ValueWithMeta({"x": [1, 2.5, "s", b"\x00"]}, revision, 1, revision, None) == client.get(
        "rt:k", meta=True
    )


def test_get_raises_not_found_when_key_absent_and_no_default(client: Client) -> None:
    """A missing key raises NotFoundError carrying the request id; a default is returned instead."""
    with pytest.raises(NotFoundError) as info:
        client.get("absent:k")
    assert isinstance(info.value.request_id, int)
    assert "fallback" == client.get("absent:k", default="fallback")
    assert None is client.get("absent:k", default=None)


def test_none_value_stored_when_value_is_none(client: Client) -> None:
    """None is a value like any other (nil), never dropped from the request."""
    client.put("nil:k", None)
    assert None is client.get("nil:k", default="absent")


def test_every_method_sends_contract_shape_when_called(client: Client, a: FakeNode) -> None:
    """Each method sends the op and argument names of the wire table; only writes carry a session."""
    client.put("s:0", 0)  # its `status` probe first (concord.client.direct): none later
    a.mode(probe=True)  # the test's own `status` recorded (tests/client/fakes.py)
    before = len(a.requests())
    client.put("s:1", 1, ttl=5, compress=True)
    client.get("s:1", consistency="strong", meta=True)
    client.delete("s:1")
    client.put_many([("s:2", 2), ("s:3", 3, 7.5)])
    client.get_many(["s:2", "s:3"], consistency="eventual")
    client.touch("s:2", 9)
    client.touch_many([("s:2", 1), ("s:3", 2)])
    client.ttl("s:2")
    client.get_with_ttl("s:3")
    client.get_all(limit=10, after="s:")
    client.put_if("s:4", 4, absent=True, ttl=3)
    client.delete_if("s:4", version=1)
    client.keys(prefix="s:", limit=5, offset=1)
    client.query(prefix="s:", range=("s:0", "s:9"), where=["eq", "f", 1])
    client.count(prefix="s:", consistency="eventual")
    client.delete_many(["s:2"])
    client.delete_where(prefix="s:")
    client.events(0, prefix="s:", limit=3)
    client.status()
    client.members()
    client.add_member("n4", "127.0.0.1", 1, 2, 3, learner=True)
    client.promote_member("n4")
    client.remove_member("n4")
    client.transfer_leader("n2")
    sent = since(a, before)
    envelope = {"id", "timeout_ms", "client_id", "seq"}
    shapes = [(r["op"], {k: v for k, v in r.items() if k not in envelope and k != "op"}) for r in sent]
    assert [
        ("put", {"key": "s:1", "value": 1, "ttl": 5, "compress": True}),
        ("get", {"key": "s:1", "consistency": "strong", "meta": True}),
        ("delete", {"key": "s:1"}),
        ("put_many", {"items": [["s:2", 2], ["s:3", 3, 7.5]]}),
        ("get_many", {"keys": ["s:2", "s:3"], "consistency": "eventual"}),
        ("touch", {"key": "s:2", "ttl": 9}),
        ("touch_many", {"items": [["s:2", 1], ["s:3", 2]]}),
        ("ttl", {"key": "s:2", "consistency": "leader"}),
        ("get_with_ttl", {"key": "s:3", "consistency": "leader"}),
        ("get_all", {"limit": 10, "after": "s:", "consistency": "leader"}),
        ("put_if", {"key": "s:4", "value": 4, "absent": True, "ttl": 3}),
        ("delete_if", {"key": "s:4", "version": 1}),
        ("keys", {"prefix": "s:", "limit": 5, "offset": 1, "consistency": "leader"}),
        ("query", {"prefix": "s:", "range": ["s:0", "s:9"], "where": ["eq", "f", 1], "consistency": "leader"}),
        ("count", {"prefix": "s:", "consistency": "eventual"}),
        ("delete_many", {"keys": ["s:2"]}),
        ("delete_where", {"prefix": "s:"}),
        ("events", {"since_revision": 0, "prefix": "s:", "limit": 3}),
        ("status", {}),
        ("members", {}),
        ("add_member", {"member_id": "n4", "host": "127.0.0.1", "client_port": 1, "peer_port": 2,
                        "events_port": 3, "learner": True}),
        ("promote_member", {"member_id": "n4"}),
        ("remove_member", {"member_id": "n4"}),
        ("transfer_leader", {"member_id": "n2"}),
    ] == shapes
    writes = {"put", "delete", "put_many", "touch", "touch_many", "put_if", "delete_if",
              "delete_many", "delete_where"}
    for r in sent:
        has_session = "client_id" in r and "seq" in r
        assert (r["op"] in writes) == has_session, r
        assert isinstance(r["timeout_ms"], int)
    seqs = [int(str(r["seq"])) for r in sent if "seq" in r]
    assert sorted(set(seqs)) == seqs
    assert {client.client_id} == {r["client_id"] for r in sent if "client_id" in r}


def test_results_are_typed_when_replies_have_several_fields(client: Client) -> None:
    """Multi-field replies come back as frozen dataclasses."""
    r1 = client.put("ty:a", "A", ttl=30)
    r2 = client.put("ty:b", "B")
    assert ValueWithTTL("A", 30.0) == client.get_with_ttl("ty:a")
    assert 30.0 == client.ttl("ty:a")
    assert None is client.ttl("ty:b")
    assert KeysPage(("ty:a", "ty:b"), False) == client.keys(prefix="ty:")
    assert Page((("ty:b", "B"),), False) == client.query(prefix="ty:", offset=1)
    assert Page((("ty:a", "A"),), True) == client.get_all(limit=1, after="ty:")
    assert 2 == client.count(prefix="ty:")
    assert {"ty:a": "A"} == client.get_many(["ty:a", "ty:zz"])
    page = client.events(r1 - 1, prefix="ty:")
    assert isinstance(page, EventsPage) and False is page.compacted
    assert Event("put", "ty:a", "A", r1, 1000 + r1, 30.0) == page.events[0]
    assert Event("put", "ty:b", "B", r2, 1000 + r2, None) == page.events[1]
    deleted = client.delete("ty:a")
    assert isinstance(deleted, DeleteResult) and deleted.deleted and deleted.revision > r2
    assert False is client.delete("ty:a").deleted
    assert BulkDeleteResult(1, deleted.revision + 2) == client.delete_where(prefix="ty:")


def test_write_resent_with_same_session_when_reply_lost(a: FakeNode) -> None:
    """A write whose reply is lost is resent with the same (client_id, seq) and applied once."""
    with Client(a.endpoint, timeout_s=10.0, attempt_timeout_s=1.0, shm=False) as c:
        before = len(a.requests())
        a.mode(drop_replies=1)
        revision = c.put("xo:k", "v")
        sent = since(a, before)
        assert 2 == len(sent)
        assert sent[0]["seq"] == sent[1]["seq"] == c.seq
        assert sent[0]["client_id"] == sent[1]["client_id"] == c.client_id
        assert sent[0]["id"] != sent[1]["id"]
        assert ValueWithMeta("v", revision, 1, revision, None) == c.get("xo:k", meta=True)


def test_unknown_result_raised_when_write_never_answered(a: FakeNode) -> None:
    """Every attempt of a write silent: UnknownResultError, all attempts with one seq."""
    with Client(a.endpoint, timeout_s=1.0, retries=3, attempt_timeout_s=0.2, shm=False) as c:
        before = len(a.requests())
        a.mode(drop_replies=100)
        with pytest.raises(UnknownResultError):
            c.put("unk:k", 1)
        a.mode()
        sent = since(a, before, at_least=2)
        assert 2 <= len(sent)
        assert {c.seq} == {r["seq"] for r in sent}
        assert 1 == c.get("unk:k")  # it was applied, once
        assert 1 == c.get("unk:k", meta=True).version


def test_write_not_resent_when_sessions_disabled(a: FakeNode) -> None:
    """Without a session an unanswered write is never resent: UnknownResultError after one send."""
    with Client(a.endpoint, timeout_s=2.0, attempt_timeout_s=0.2, sessions=False, shm=False) as c:
        before = len(a.requests())
        a.mode(ignore=1)
        with pytest.raises(UnknownResultError):
            c.put("nosess:k", 1)
        sent = since(a, before, at_least=1)
        assert 1 == len(sent)
        assert "client_id" not in sent[0] and "seq" not in sent[0]


def test_read_retried_then_timeout_raised_when_never_answered(a: FakeNode) -> None:
    """A read with no answer is retried `retries` times, then RequestTimeoutError."""
    with Client(a.endpoint, timeout_s=5.0, retries=2, attempt_timeout_s=0.2, shm=False) as c:
        before = len(a.requests())
        a.mode(ignore=100)
        with pytest.raises(RequestTimeoutError):
            c.get("silent:k")
        sent = since(a, before, at_least=3)
        assert 3 == len(sent)
        assert all("seq" not in r for r in sent)


def test_read_succeeds_when_first_attempt_silent(a: FakeNode) -> None:
    """Lazy Pirate: the silent attempt's socket is reopened and the retry is answered."""
    # NB: 0.1 s: the front door's own `timeout` (timeout_ms 40 + 100 ms grace) comes too late.
    with Client(a.endpoint, timeout_s=5.0, attempt_timeout_s=0.1, shm=False) as c:
        c.put("lp:k", "v")
        a.mode(ignore=1)
        assert "v" == c.get("lp:k")
        assert 1 <= c.transport.reopens


def test_server_timeout_retried_when_front_door_answers_timeout(a: FakeNode) -> None:
    """The front door's `timeout` reply (backend silent) counts as a silent attempt."""
    with Client(a.endpoint, timeout_s=10.0, attempt_timeout_s=1.0, shm=False) as c:
        c.put("st:k", "v")
        before = len(a.requests())
        a.mode(ignore=1)
        assert "v" == c.get("st:k")
        assert 2 == len(since(a, before))
        assert 0 == c.transport.reopens  # answered by the server, socket kept


def test_leader_hint_followed_and_remembered_when_not_leader(a: FakeNode, b: FakeNode) -> None:
    """not_leader with a hint: the request goes to the hinted node, and so do later ones."""
    a.mode(redirect=b.endpoint)
    with Client(a.endpoint, timeout_s=10.0, attempt_timeout_s=3.0, shm=False) as c:
        before_a, before_b = len(a.requests()), len(b.requests())
        revision = c.put("lh:k", "v")
        assert b.endpoint == c.leader
        assert "v" == c.get("lh:k")
        sent_a, sent_b = since(a, before_a), since(b, before_b)
        assert ["put"] == [r["op"] for r in sent_a]
        assert ["put", "get"] == [r["op"] for r in sent_b]
        assert sent_a[0]["seq"] == sent_b[0]["seq"]  # the same write, followed
        assert revision == c.get("lh:k", meta=True).revision


def test_not_leader_raised_when_hints_loop_past_max_redirects(a: FakeNode, b: FakeNode) -> None:
    """Two nodes pointing at each other: bounded hops, then NotLeaderError at the deadline."""
    a.mode(redirect=b.endpoint)
    b.mode(redirect=a.endpoint)
    with Client(a.endpoint, timeout_s=2.0, attempt_timeout_s=1.0, max_redirects=3, shm=False) as c:
        with pytest.raises(NotLeaderError) as info:
            c.get("loop:k")
        assert info.value.leader_hint in (a.endpoint, b.endpoint)
    a.mode()
    b.mode()


def test_next_endpoint_tried_when_no_leader(a: FakeNode, leaderless: FakeNode) -> None:
    """no_leader from the first endpoint: the next one is tried after a backoff."""
    with Client([leaderless.endpoint, a.endpoint], timeout_s=10.0, attempt_timeout_s=3.0, shm=False) as c:
        c.put("nl:k", 1)
        assert a.endpoint == c.leader


def test_no_leader_raised_when_deadline_passes(leaderless: FakeNode) -> None:
    """Only a leaderless node: NoLeaderError once the deadline passes."""
    with Client(leaderless.endpoint, timeout_s=1.0, attempt_timeout_s=1.0, shm=False) as c:
        with pytest.raises(NoLeaderError):
            c.get("nl:k")


def test_not_leader_without_hint_treated_as_no_leader_when_retried(a: FakeNode) -> None:
    """not_leader with no hint: backoff and retry, then success."""
    with Client(a.endpoint, timeout_s=10.0, attempt_timeout_s=3.0, shm=False) as c:
        c.put("nh:k", 1)
        a.mode(not_leader=2)
        assert 1 == c.get("nh:k")


def test_dead_endpoint_skipped_when_silent(a: FakeNode) -> None:
    """A closed port never answers: after one silent attempt the next endpoint serves."""
    dead = f"tcp://127.0.0.1:{closed_port()}"
    with Client([dead, a.endpoint], timeout_s=10.0, attempt_timeout_s=0.3, shm=False) as c:
        c.put("dead:k", 1)
        assert 1 == c.get("dead:k")


@pytest.mark.parametrize("code, cls", [
    ("not_found", NotFoundError),
    ("condition_failed", ConditionFailedError),
    ("unauthorized", UnauthorizedError),
    ("forbidden", ForbiddenError),
    ("quota_exceeded", QuotaExceededError),
    ("invalid_request", InvalidRequestError),
    ("invalid_key", InvalidKeyError),
    ("value_too_large", ValueTooLargeError),
    ("too_many_items", TooManyItemsError),
])
def test_error_reply_mapped_to_class_when_backend_fails(
    a: FakeNode, client: Client, code: str, cls: type[ClientError]
) -> None:
    """Each wire error code raises its concord.errors class with message and request id."""
    a.mode(error=[code, f"boom {code}", None])
    before = len(a.requests())
    with pytest.raises(cls) as info:
        client.put("err:k", 1)
    assert type(info.value) is cls
    assert f"boom {code}" == info.value.message
    sent = since(a, before)
    assert 1 == len(sent)
    assert sent[0]["id"] == info.value.request_id


def test_unknown_error_code_raised_as_client_error_when_server_is_newer(a: FakeNode, client: Client) -> None:
    """An error code this client does not know still raises, as ClientError."""
    a.mode(error=["brand_new", "later", None])
    with pytest.raises(ClientError) as info:
        client.get("x")
    assert ClientError is type(info.value)
    assert "brand_new" in info.value.message


def test_bad_arguments_rejected_locally_when_wire_table_forbids(a: FakeNode, client: Client) -> None:
    """Arguments the wire table refuses raise InvalidRequestError before anything is sent."""
    before = len(a.requests())
    with pytest.raises(InvalidRequestError):
        client.put_if("k", 1, version=1, absent=True)
    with pytest.raises(InvalidRequestError):
        client.delete_if("k")
    with pytest.raises(InvalidRequestError):
        client.get("k", consistency="sloppy")
    with pytest.raises(InvalidRequestError):
        client.get_all(limit=-1)
    with pytest.raises(InvalidRequestError):
        client.put_if("k", 1, absent=True, condition=lambda cur: True)
    assert [] == since(a, before)


def test_put_if_callable_retries_when_key_changes_concurrently(a: FakeNode, client: Client) -> None:
    """The optimistic loop re-reads after a lost race and writes once the condition holds."""
    client.put("cas:k", 1)
    seen: list[object] = []
    with Client(a.endpoint, shm=False) as other:

        def condition(current: object) -> bool:
            seen.append(current)
            if len(seen) == 1:
                other.put("cas:k", 2)  # a concurrent writer wins the first round
            return isinstance(current, int) and current < 10

        revision = client.put_if("cas:k", 100, condition=condition)
    assert [1, 2] == seen
    assert ValueWithMeta(100, revision, 3, client.get("cas:k", meta=True).create_revision, None) == client.get(
        "cas:k", meta=True
    )


def test_put_if_callable_sees_missing_when_key_absent(client: Client) -> None:
    """An absent key is passed as MISSING and written with mod_revision 0 (absent)."""
    seen: list[object] = []

    def condition(current: object) -> bool:
        seen.append(current)
        return current is MISSING

    client.put_if("cas:new", "x", condition=condition)
    assert [MISSING] == seen
    assert "x" == client.get("cas:new")


def test_put_if_callable_raises_when_condition_false(client: Client) -> None:
    """A callable saying no raises ConditionFailedError and writes nothing."""
    client.put("cas:no", 1)
    with pytest.raises(ConditionFailedError):
        client.put_if("cas:no", 2, condition=lambda cur: False)
    assert 1 == client.get("cas:no")


def test_put_if_callable_gives_up_when_key_keeps_changing(a: FakeNode) -> None:
    """A key that changes every round: ConditionFailedError after cas_retries rounds."""
    with Client(a.endpoint, cas_retries=3, shm=False) as c, Client(a.endpoint, shm=False) as other:
        c.put("cas:hot", 0)
        rounds: list[object] = []

        def condition(current: object) -> bool:
            rounds.append(current)
            other.put("cas:hot", len(rounds))
            return True

        with pytest.raises(ConditionFailedError):
            c.put_if("cas:hot", "mine", condition=condition)
        assert 3 == len(rounds)


def test_expected_condition_compares_value_when_put_if(client: Client) -> None:
    """put_if(expected=...) and delete_if(expected=...) go through on equality only."""
    client.put("exp:k", {"a": 1})
    with pytest.raises(ConditionFailedError):
        client.put_if("exp:k", 2, expected={"a": 2})
    client.put_if("exp:k", 2, expected={"a": 1})
    with pytest.raises(ConditionFailedError):
        client.delete_if("exp:k", expected=3)
    assert True is client.delete_if("exp:k", expected=2).deleted
    assert "gone" == client.get("exp:k", default="gone")


def test_replies_matched_and_writes_applied_once_when_threads_share_client(a: FakeNode) -> None:
    """16 threads on one Client, some replies lost: each gets its own answer, each write applies once."""
    before = len(a.requests())
    errors: list[BaseException] = []
    with Client(a.endpoint, timeout_s=30.0, attempt_timeout_s=1.0, shm=False) as c:
        a.mode(drop_replies=8)
        start = threading.Barrier(16)

        def work(n: int) -> None:
            try:
                start.wait(10.0)
                for i in range(10):
                    c.put(f"hm:{n}:{i}", f"{n}:{i}")
                    assert f"{n}:{i}" == c.get(f"hm:{n}:{i}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60.0)
        assert [] == errors
        a.mode()
        versions = {c.get(f"hm:{n}:{i}", meta=True).version for n in range(16) for i in range(10)}
        assert {1} == versions  # a resent write was answered from its session, not applied again
        assert 1 == c.session_slots  # one client_id: min_seq keeps every in-flight result
    puts = [r for r in since(a, before) if r["op"] == "put"]
    pairs = {(r["client_id"], r["seq"]) for r in puts}
    assert 160 == len(pairs)  # one session pair per write, shared by its resends only
    assert len(puts) > 160  # replies were lost and writes resent


@pytest.mark.parametrize("option", [{"token": "t0k"}, {"ns": "tenant1"}])
def test_token_and_ns_sent_when_given(a: FakeNode, option: dict[str, str]) -> None:
    """token / ns go with every request: the node checks them (tests/integration/test_auth.py)."""
    ((name, value),) = option.items()
    with Client(a.endpoint, shm=False, timeout_s=5.0, **option) as c:  # type: ignore[arg-type]
        before = len(a.requests())
        c.put("tn:k", 1)
        c.get("tn:k")
        sent = since(a, before)
        assert [value, value] == [r.get(name) for r in sent]


def test_given_client_id_used_when_passed(a: FakeNode) -> None:
    """A given client_id is the session id of every write."""
    with Client(a.endpoint, client_id="app-7", shm=False) as c:
        before = len(a.requests())
        c.put("cid:k", 1)
        assert "app-7" == since(a, before)[0]["client_id"]


def test_closed_client_refuses_calls_when_closed(a: FakeNode) -> None:
    """After close() every call raises ShuttingDownError; close is idempotent."""
    c = Client(a.endpoint, shm=False)
    c.close()
    c.close()
    with pytest.raises(ShuttingDownError):
        c.get("k")


def test_passed_context_left_running_when_client_closes(a: FakeNode) -> None:
    """A context the application passed in is not terminated by close()."""
    ctx: Context = zmq.Context()
    try:
        with Client(a.endpoint, context=ctx, shm=False) as c:
            c.put("ctx:k", 1)
        assert not ctx.closed
    finally:
        ctx.term()


def test_config_error_raised_when_options_bad() -> None:
    """Bad constructor options are refused with ConfigError naming them."""
    with pytest.raises(ConfigError):
        Client([])
    with pytest.raises(ConfigError):
        Client("tcp://127.0.0.1:1", timeout_s=0)
    with pytest.raises(ConfigError):
        Client("tcp://127.0.0.1:1", client_id="")


def test_index_ops_classified_from_wire_table_when_called(client: Client, a: FakeNode) -> None:
    """create_index / drop_index carry a session (kv writes); list_indexes / index_lookup do not."""
    before = len(a.requests())
    client.call("create_index", {"name": "i", "field": "f"})
    client.call("drop_index", {"name": "i"})
    client.call("list_indexes")
    client.call("index_lookup", {"name": "i", "value": 1})
    sent = since(a, before)
    assert [("create_index", True), ("drop_index", True), ("list_indexes", False), ("index_lookup", False)] == [
        (r["op"], "client_id" in r and "seq" in r) for r in sent
    ]


def test_touch_sends_nil_ttl_when_ttl_is_none(client: Client, a: FakeNode) -> None:
    """touch(key, None) clears the ttl: the request carries ttl nil, not no ttl."""
    client.put("tn:clear", 1, ttl=5)
    before = len(a.requests())
    client.touch("tn:clear", None)
    assert [("touch", {"key": "tn:clear", "ttl": None})] == [
        (r["op"], {k: r[k] for k in ("key", "ttl")}) for r in since(a, before)
    ]
