"""Two `intelrouter serve` replicas on one store and one registry, behind a real haproxy started by the test.

A promotion reaches both within the poll interval, a user gets the same variant from either, and one replica
killed with SIGKILL mid-load costs no failed request at the balancer and no query row: haproxy retries the
requests the dead replica did not answer on the other one, and the killed replica's journal is replayed when it
is restarted (its data directory is its own, as on its own host).
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from conftest import wait_for
from server_support import Load, Server
from serving_fixtures import query_rows, use_registry

from devservers.haproxy import HAProxy, HAProxyMissing
from intelrouter import lifecycle, store
from intelrouter.config import Settings

POLL_SECONDS = 1.0
SALT = "replica-test-salt-3b8f"  # every host of one installation hashes with the same salt (README "Scaling out")


def _served_by(base: str) -> set[str]:
    seen = set()
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(20):
            res = http.post("/route", json={"text": "what is my balance", "user_id": f"probe-{i}"})
            if res.status_code == 200:
                seen.add(res.headers.get("x-served-by"))
    return seen


def _settled_at(answers: list[dict], server: str, since: float) -> float | None:
    """When a replica's answers turned to v2 @production for good (None: not yet)."""
    mine = sorted((a for a in answers if a["server"] == server and a["at"] >= since), key=lambda a: a["at"])
    old = [a["at"] for a in mine if (a["model_version"], a["variant"]) != ("2", "production")]
    new = [a["at"] for a in mine if (a["model_version"], a["variant"]) == ("2", "production")]
    if not new or (old and old[-1] > new[-1]):
        return None
    return max(old) if old else since


def test_two_replicas_behind_haproxy_promote_together_and_survive_a_kill(
    settings: Settings, registry_template: Path, tmp_path: Path
) -> None:
    use_registry(registry_template, tmp_path, production="1", staging="2", share=0.5)
    store.upgrade(settings)
    env = {"INTELROUTER_REGISTRY_POLL_SECONDS": str(POLL_SECONDS), "INTELROUTER_HASH_SALT": SALT}
    replicas = {name: Server(tmp_path / f"{name}.log", env={**env, "INTELROUTER_DATA_DIR": str(tmp_path / name)})
                for name in ("a", "b")}
    try:
        balancer = HAProxy(tmp_path / "haproxy", {name: r.port for name, r in replicas.items()})
    except HAProxyMissing as exc:
        pytest.fail(str(exc))
    load = Load(balancer.url, threads=4, users=40)
    try:
        for r in replicas.values():
            r.start()
        balancer.start()
        assert wait_for(lambda: _served_by(balancer.url) == {"a", "b"}, timeout=60)
        load.start()
        assert wait_for(lambda: load.count() >= 300, timeout=120), load.failures[-3:]

        # the canary split is sticky across replicas: a user's variant does not depend on who answers
        before = list(load.answers)
        variants, servers = defaultdict(set), defaultdict(set)
        for a in before:
            variants[a["user"]].add((a["variant"], a["model_version"]))
            servers[a["user"]].add(a["server"])
        assert all(len(v) == 1 for v in variants.values()), variants
        assert sum(len(s) == 2 for s in servers.values()) >= 10  # many users were answered by both
        assert {v for vs in variants.values() for v in vs} == {("production", "1"), ("staging", "2")}

        promoted_at = time.monotonic()
        lifecycle.promote(settings, "2", "production")  # the canary wins: @production moves, @staging is cleared
        assert wait_for(lambda: all(_settled_at(load.answers, n, promoted_at) for n in replicas), timeout=60)
        lags = {n: round(_settled_at(load.answers, n, promoted_at) - promoted_at, 2) for n in replicas}
        print(f"promotion reached the replicas after {lags} s (poll interval {POLL_SECONDS} s)")

        n = load.count()
        assert replicas["a"].signal(signal.SIGKILL) == -signal.SIGKILL  # mid-load, requests in flight
        assert wait_for(lambda: load.count() >= n + 300, timeout=120)  # the balancer keeps answering
        load.stop()
        assert load.failures == [], (len(load.failures), load.failures[:2],  # not one failed request at the balancer
                                     (tmp_path / "haproxy" / "haproxy.log").read_text()[-3000:])
        served_after = {a["server"] for a in load.answers[n + 50:]}
        assert served_after == {"b"}

        replicas["a"].start()  # its own data dir again: it replays the journal the kill left behind
        answered = {a["query_id"]: a for a in load.answers}
        assert wait_for(lambda: set(answered) <= set(query_rows(settings)), timeout=120)
    finally:
        load.stop()
        balancer.stop()
        for r in replicas.values():
            if r.proc is not None:
                r.stop()
    rows = query_rows(settings)
    assert set(answered) <= set(rows)
    for qid, a in answered.items():  # each row says what that answer said
        assert (rows[qid].model_version, rows[qid].variant) == (a["model_version"], a["variant"])
    by_user = defaultdict(set)
    for qid, a in answered.items():
        by_user[a["user"]].add(rows[qid].user_hash)
    assert all(len(h) == 1 for h in by_user.values())  # the same salt on both hosts: one hash per user
    for name in replicas:
        assert not list((tmp_path / name / "journal").glob("*.journal"))
