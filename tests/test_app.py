"""The router service's endpoints against a real MLflow registry: routing, feedback, auth, bad input, health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import wait_for
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from serving_fixtures import INTENTS, POLL, query_rows, route, use_registry

from intelrouter import lifecycle, store
from intelrouter.config import Settings, load_settings
from intelrouter.loading import load_router
from intelrouter.names import UNCERTAIN
from serving.app import create_app


def test_route_answers_like_the_registered_production_model(client: TestClient, serve_settings: Settings) -> None:
    reference = load_router(f"models:/{serve_settings.model_name}/1", serve_settings.tracking_uri)
    texts = ["what is my bank balance", "set an alarm for 7 am", "will it rain tomorrow",
             "how do you say hello in french", "blorp zzzt"]
    for text in texts:
        got = route(client, text)
        want = reference.predict([text])[0]
        assert (got["label"], got["top_label"], got["uncertain"]) == (want.label, want.top_label, want.uncertain)
        assert got["confidence"] == pytest.approx(want.confidence, abs=1e-6)
        assert got["model_version"] == "1" and got["variant"] == "production"
        expected_route = "human" if want.uncertain else {"balance": "banking-agent"}.get(want.label, want.label)
        assert got["route"] == expected_route
    assert route(client, "what is my bank balance")["route"] == "banking-agent"


def test_uncertain_answers_go_to_the_fallback_route(client: TestClient) -> None:
    answers = [route(client, t) for t in ("blorp zzzt qq", "xylophone cardigan", "the", "hmm ok", "purple")]
    uncertain = [a for a in answers if a["uncertain"]]
    assert uncertain, "expected at least one nonsense query below the threshold"
    assert all(a["label"] == UNCERTAIN and a["route"] == "human" and a["top_label"] in INTENTS for a in uncertain)


def test_api_query_is_the_same_endpoint(client: TestClient) -> None:
    res = client.post("/api/query", json={"text": "set an alarm for 6", "language": "en"})
    assert res.status_code == 200 and res.json()["label"] == "alarm"


def test_every_answer_is_logged_with_variant_version_and_latency(client: TestClient, serve_settings: Settings) -> None:
    answers = [route(client, f"what is my balance {i}", user_id=f"u{i}", session_id="s1", language="en")
               for i in range(20)]
    assert client.app.state.runtime.writer.flush(timeout=20)
    rows = query_rows(serve_settings)
    assert set(rows) == {a["query_id"] for a in answers}
    for a in answers:
        row = rows[a["query_id"]]
        assert (row.predicted_label, row.model_version, row.variant) == (a["label"], "1", "production")
        assert row.latency_ms > 0 and row.language == "en" and row.provider == "intelrouter"
        assert row.user_hash == store.hash_identifier(f"u{answers.index(a)}", serve_settings.hash_salt)
        assert row.review_status == store.PENDING


def test_no_production_model_is_503_and_not_ready(settings: Settings, registry_template: Path,
                                                  tmp_path: Path) -> None:
    use_registry(registry_template, tmp_path, production=None)
    with TestClient(create_app(load_settings(registry_poll_seconds=POLL))) as c:
        res = c.post("/route", json={"text": "what is my balance"})
        assert res.status_code == 503
        assert res.json()["detail"] == "No active model found: run `intelrouter train`"
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["ready"] is False
        lifecycle.promote(load_settings(), "1", "production")  # a model arrives: served without a restart
        assert wait_for(lambda: c.get("/health").status_code == 200, timeout=60)
        assert route(c)["model_version"] == "1"


def test_empty_tracking_store_is_not_ready(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["ready"] is False
        assert c.post("/route", json={"text": "hi"}).status_code == 503


def test_feedback_right_after_routing_reaches_ml_data(client: TestClient, serve_settings: Settings) -> None:
    client.app.state.runtime.writer.flush_interval = 3600  # the query row is still in the buffer
    qid = route(client, "what is my balance")["query_id"]
    res = client.post("/feedback", json={"query_id": qid, "label": "balance"})
    assert res.status_code == 200, res.text
    assert res.json() == {"query_id": qid, "label": "balance", "source": "feedback", "written": True}
    res = client.post("/override", json={"query_id": qid, "label": "transfer"})
    assert res.status_code == 200 and res.json()["source"] == "override"
    with store.connect(serve_settings) as conn:
        rows = conn.execute(sa.select(store.ml_data.c.label, store.ml_data.c.source)
                            .where(store.ml_data.c.query_id == qid)).all()
    assert [(r.label, r.source) for r in rows] == [("transfer", "override")]


def test_feedback_on_unknown_query_is_404(client: TestClient) -> None:
    res = client.post("/feedback", json={"query_id": "00000000-0000-0000-0000-000000000000", "label": "balance"})
    assert res.status_code == 404 and "unknown query id" in res.json()["detail"]


def test_unknown_label_is_422_unless_new_labels_are_allowed(client: TestClient, serve_settings: Settings) -> None:
    qid = route(client)["query_id"]
    res = client.post("/override", json={"query_id": qid, "label": "pay_bill"})
    assert res.status_code == 422 and "not one the model knows" in res.json()["detail"]
    assert client.app.state.runtime.writer.flush(timeout=20)  # another app instance reads it from the database
    with TestClient(create_app(load_settings(allow_new_labels=True))) as c2:
        assert c2.post("/override", json={"query_id": qid, "label": "pay_bill"}).status_code == 200


def test_api_key_guards_feedback_override_and_admin(serve_settings: Settings) -> None:
    with TestClient(create_app(load_settings(api_key="s3cret"))) as c:
        qid = route(c)["query_id"]  # /route stays open unless require_key_for_route
        body = {"query_id": qid, "label": "balance"}
        for path in ("/feedback", "/override", "/admin/reload"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                res = c.post(path, json=body, headers=headers)
                assert res.status_code == 401, (path, headers)
                assert res.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/feedback", json=body, headers=ok).status_code == 200
        assert c.post("/admin/reload", headers=ok).json()["versions"]["production"] == "1"
    with TestClient(create_app(load_settings(api_key="s3cret", require_key_for_route=True))) as c:
        assert c.post("/route", json={"text": "balance"}).status_code == 401
        assert c.post("/route", json={"text": "balance"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.mark.parametrize(
    ("content", "ctype", "status", "message"),
    [
        (b'{"text": ""}', "application/json", 422, "text is empty"),
        (b'{"text": "   "}', "application/json", 422, "text is empty"),
        (b'{"text": 42}', "application/json", 422, "valid string"),
        (b'{"text": null}', "application/json", 422, "valid string"),
        (b'{"nope": "x"}', "application/json", 422, "text: Field required"),
        (b'{"text": "' + b"a" * 2001 + b'"}', "application/json", 422, "maximum is 2000"),
        (b'{"text": "hi", "language": "' + b"x" * 40 + b'"}', "application/json", 422, "language"),
        (b"{bad json", "application/json", 400, "invalid JSON"),
        (b'["a list"]', "application/json", 422, "expected a JSON object"),
        (b"\xff\xfe", "application/json", 400, "invalid JSON"),
        (b"text=hello", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
        (b'{"text": "hi"}', "text/plain", 415, "Content-Type: application/json"),
        (b"x" * 20_000, "application/json", 413, "request body is over"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(client: TestClient, content: bytes, ctype: str, status: int,
                                           message: str) -> None:
    res = client.post("/route", content=content, headers={"content-type": ctype})
    assert res.status_code == status, res.text
    assert message in res.json()["detail"]
    assert route(client)["label"] == "balance"  # and the server keeps serving


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
BODIES = st.fixed_dictionaries(
    {}, optional={"text": JSON_VALUES | st.text(max_size=300), "user_id": JSON_VALUES, "session_id": JSON_VALUES,
                  "language": JSON_VALUES, "query_id": JSON_VALUES | st.uuids().map(str), "label": JSON_VALUES,
                  "phoneNumber": JSON_VALUES, "route_taken": JSON_VALUES, "outcomes": JSON_VALUES},
) | JSON_VALUES


def test_fuzzed_requests_never_get_a_5xx(client: TestClient) -> None:
    @hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=st.sampled_from(["/route", "/api/query", "/nlu/classify", "/feedback", "/override", "/outcome"]),
           body=BODIES,
           raw=st.none() | st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", ""]))
    def check(path: str, body: Any, raw: bytes | None, ctype: str) -> None:
        if raw is None:
            res = client.post(path, json=body, headers={"content-type": ctype or "application/json"})
        else:
            res = client.post(path, content=raw, headers={"content-type": ctype} if ctype else {})
        assert res.status_code < 500, (path, body, raw, res.text)
        assert isinstance(res.json()["detail"] if res.status_code >= 400 else res.json(), str | dict)

    check()
    assert route(client)["label"] == "balance"


def test_mounted_under_a_prefix_the_documented_route_answers(client: TestClient) -> None:
    from fastapi import FastAPI

    parent = FastAPI()
    parent.mount("/v1", client.app)  # the inner app is already running (client's lifespan)
    outer = TestClient(parent)
    res = outer.post("/v1/route", json={"text": "what is my balance"})
    assert res.status_code == 200 and res.json()["label"] == "balance"
    assert outer.post("/v1/api/query", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert outer.post("/v1/route", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    body = client.app.openapi()["paths"]["/route"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["text"]


def test_nlu_classify_answers_like_route_for_seed_004s_clients(client: TestClient, serve_settings: Settings) -> None:
    for text in ("what is my bank balance", "set an alarm for 7 am", "blorp zzzt"):
        want = route(client, text)
        res = client.post("/nlu/classify", json={"text": text, "phoneNumber": "test123"})  # seed 004's request
        assert res.status_code == 200, res.text
        got = res.json()
        assert set(got) == set(want) and got["query_id"] != want["query_id"]
        assert {k: got[k] for k in got if k != "query_id"} == {k: want[k] for k in want if k != "query_id"}
    assert client.post("/nlu/classify", json={"phoneNumber": "test123"}).status_code == 422
    assert client.app.state.runtime.writer.flush(timeout=20)
    phone = store.hash_identifier("test123", serve_settings.hash_salt)
    assert sum(r.user_hash == phone for r in query_rows(serve_settings).values()) == 3
    assert "/nlu/classify" in client.app.openapi()["paths"]


def test_phone_number_keeps_a_user_on_one_variant_and_is_stored_hashed(settings: Settings, registry_template: Path,
                                                                       tmp_path: Path) -> None:
    use_registry(registry_template, tmp_path, production="1", staging="2", share=0.5)
    with TestClient(create_app(load_settings(registry_poll_seconds=POLL))) as c:
        by_phone = {}
        for i in range(12):
            phone = f"+91 98765 {i:05d}"
            variants = {route(c, "what is my balance", **{key: phone})["variant"]
                        for key in ("phoneNumber", "phone_number", "user_id")}
            assert len(variants) == 1, phone  # the phone number is the user id: one sticky variant
            by_phone[phone] = variants.pop()
        assert set(by_phone.values()) == {"production", "staging"}
        assert c.app.state.runtime.writer.flush(timeout=20)
    hashes = {r.user_hash for r in query_rows(load_settings()).values()}
    assert hashes == {store.hash_identifier(p, load_settings().hash_salt) for p in by_phone}
    assert not any("98765" in h for h in hashes)


def test_outcome_is_stored_with_the_query_and_measured_by_the_report(client: TestClient,
                                                                      serve_settings: Settings) -> None:
    from intelrouter import report as monitoring

    client.app.state.runtime.writer.flush_interval = 3600  # the query rows are still in the buffer
    ids = [route(client, f"what is my balance {i}")["query_id"] for i in range(4)]
    res = client.post("/outcome", json={"query_id": ids[0], "route_taken": "LLM", "final_label": "balance",
                                        "final_confidence": 0.97, "final_provider": "teacher"})
    assert res.status_code == 200 and res.json() == {"updated": 1}, res.text
    res = client.post("/outcome", json={"outcomes": [{"query_id": ids[1], "route_taken": "opensearch"},
                                                     {"query_id": ids[2], "route_taken": "php"}]})
    assert res.status_code == 200 and res.json() == {"updated": 2}, res.text
    rows = query_rows(serve_settings)
    assert (rows[ids[0]].route_taken, rows[ids[0]].final_label, rows[ids[0]].final_confidence,
            rows[ids[0]].final_provider) == ("llm", "balance", 0.97, "teacher")
    assert [rows[i].route_taken for i in ids[1:]] == ["opensearch", "php", None]
    day = monitoring.collect(serve_settings).days[-1]
    assert (day["outcomes_reported"], day["caller_fallback_rate"]) == (3, round(1 / 3, 4))


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"query_id": "00000000-0000-0000-0000-000000000000", "route_taken": "llm"}, 404, "unknown query id"),
    ({"outcomes": [{"query_id": "KNOWN", "route_taken": "llm"},
                   {"query_id": "00000000-0000-0000-0000-000000000000", "route_taken": "llm"}]}, 404,
     "nothing was recorded"),
    ({"query_id": "KNOWN"}, 422, "route_taken: Field required"),
    ({"query_id": "KNOWN", "route_taken": "llm", "lable": "x"}, 422, "lable: Extra inputs"),
    ({"query_id": "KNOWN", "route_taken": "llm", "confidence": 3}, 422, "confidence"),
    ({"outcomes": []}, 422, "outcomes"),
    ({"outcomes": [{"query_id": "KNOWN", "route_taken": "llm"}] * 1001}, 422, "outcomes"),
])
def test_a_bad_or_unknown_outcome_is_a_4xx_and_records_nothing(client: TestClient, serve_settings: Settings,
                                                               body: dict, status: int, message: str) -> None:
    known = route(client)["query_id"]
    res = client.post("/outcome", content=json.dumps(body).replace("KNOWN", known),
                      headers={"content-type": "application/json"})
    assert res.status_code == status and message in res.json()["detail"], res.text
    assert client.app.state.runtime.writer.flush(timeout=20)
    assert query_rows(serve_settings)[known].route_taken is None


def test_outcome_needs_the_api_key_like_feedback(serve_settings: Settings) -> None:
    with TestClient(create_app(load_settings(api_key="s3cret"))) as c:
        body = {"query_id": route(c)["query_id"], "route_taken": "human"}
        assert c.post("/outcome", json=body).status_code == 401
        assert c.post("/outcome", json=body, headers={"Authorization": "Bearer s3cret"}).json() == {"updated": 1}
