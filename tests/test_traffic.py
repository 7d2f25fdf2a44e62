"""The traffic split: sticky by user, then session, then request; the canary share is the bar; the route target."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from intelrouter.keys import bucket
from intelrouter.names import PRODUCTION, STAGING
from intelrouter.traffic import choose_variant, route_target, sticky_key


@given(st.text(min_size=1), st.lists(st.text(min_size=1), min_size=2, max_size=5))
def test_same_user_always_gets_the_same_variant(user: str, request_ids: list[str]) -> None:
    variants = {choose_variant(0.5, user, None, rid) for rid in request_ids}
    assert len(variants) == 1


def test_user_id_wins_over_session_and_session_over_request() -> None:
    assert sticky_key("u1", "s1", "r1") == "user:u1"
    assert sticky_key(None, "s1", "r1") == "session:s1"
    assert sticky_key("", "", "r1") == "request:r1"
    # a session without a user keeps its variant across requests
    assert len({choose_variant(0.5, None, "s-42", f"r{i}") for i in range(50)}) == 1


def test_requests_without_ids_are_spread_by_request_id() -> None:
    variants = [choose_variant(0.5, None, None, f"req-{i}") for i in range(400)]
    assert 120 < variants.count(STAGING) < 280


def test_share_zero_or_no_staging_model_sends_everyone_to_production() -> None:
    users = [f"user-{i}" for i in range(500)]
    assert {choose_variant(0.0, u, None, "r") for u in users} == {PRODUCTION}
    assert {choose_variant(1.0, u, None, "r", has_staging=False) for u in users} == {PRODUCTION}
    assert {choose_variant(1.0, u, None, "r") for u in users} == {STAGING}


def test_staging_share_matches_the_canary_share() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    for share in (0.1, 0.5):
        got = sum(choose_variant(share, u, None, "r") == STAGING for u in users) / len(users)
        assert abs(got - share) < 0.02


def test_raising_the_share_keeps_canary_users_in_the_canary() -> None:
    users = [f"user-{i}" for i in range(2_000)]
    at_10 = {u for u in users if choose_variant(0.1, u, None, "r") == STAGING}
    at_50 = {u for u in users if choose_variant(0.5, u, None, "r") == STAGING}
    assert at_10 and at_10 < at_50


@given(st.text())
def test_bucket_is_in_the_unit_interval(key: str) -> None:
    assert 0 <= bucket(key) < 1


def test_buckets_never_move_between_processes_or_releases() -> None:
    # values computed once (blake2b, 8 bytes): a user's variant must survive restarts, replicas and upgrades
    assert bucket("user:alice") == 0.9318704032259605
    assert bucket("user:bob") == 0.5709068977858225
    assert bucket("session:s-1") == 0.08547503834505434
    assert choose_variant(0.6, "bob", None, "r") == STAGING and choose_variant(0.5, "bob", None, "r") == PRODUCTION


def test_route_target_is_the_label_route_or_the_fallback() -> None:
    routes = {"balance": "banking-agent"}
    assert route_target("balance", False, routes, "human") == "banking-agent"
    assert route_target("weather", False, routes, "human") == "weather"
    assert route_target("UNCERTAIN", True, routes, "human") == "human"
