"""The router service against a real MLflow registry: routing, the split, alias moves, feedback, bad input.

A small CLINC150 model is trained and registered once per module with `intelrouter train` (the real
training code) into a SQLite tracking store; each test gets its own copy of that store and a fresh
database, so alias moves in one test never leak into another.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import DATASETS, free_port, wait_for
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from intelrouter import registry, store
from intelrouter.config import Settings, load_settings
from intelrouter.model import UNCERTAIN, load_router
from serving.app import create_app

INTENTS = ["balance", "transfer", "weather", "timer", "alarm", "translate", "flight_status", "book_hotel"]
CLI = [sys.executable, "-m", "intelrouter.cli"]
POLL = 0.2
TRAIN_SCRIPT = """
import sys
from pathlib import Path
from intelrouter.config import load_settings
from intelrouter.labels import import_labels
from intelrouter.train import train
settings = load_settings()
import_labels(settings, Path(sys.argv[1]))
result = train(settings)
print(result.version, result.lifecycle)
"""


def _write_rows(path: Path, per_intent: int, offset: int) -> None:
    rows = [r for r in csv.DictReader((DATASETS / "clinc150" / "clinc150_full.csv").open(encoding="utf-8"))
            if r["split"] == "train" and r["label"] in INTENTS]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["text"])
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for label, texts in by_label.items():
            w.writerows((t, label) for t in texts[offset: offset + per_intent])


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracking store holding two trained versions of a small CLINC150 router (v1 is @production)."""
    root = tmp_path_factory.mktemp("registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "MLFLOW_TRACKING"))}
    env.update({"INTELROUTER_DATA_DIR": str(root / "data"), "INTELROUTER_DATABASE_URL": f"sqlite:///{root}/ir.db",
                "INTELROUTER_MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    for per_intent, offset in ((30, 0), (30, 30)):
        data = root / f"rows-{offset}.csv"
        _write_rows(data, per_intent, offset)
        # in a subprocess: training sets MLflow's process-wide tracking URI, which must not leak into tests
        res = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(data)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, f"training failed: {res.stdout}{res.stderr}"
    return root


def _use_registry(template: Path, tmp_path: Path, production: str | None = "1", staging: str | None = None,
                  share: float | None = None) -> None:
    """Copy the template store to where the `settings` fixture points, with the aliases a test wants."""
    shutil.copy(template / "mlflow.db", tmp_path / "mlflow.db")
    s = load_settings()
    client = registry.get_client(s)
    for alias, version in (("production", production), ("staging", staging)):
        if version is None:
            if registry.alias_version(s, alias) is not None:
                client.delete_registered_model_alias(s.model_name, alias)
        else:
            client.set_registered_model_alias(s.model_name, alias, version)
    registry.set_canary_share(s, share if share is not None else 0.0)


@pytest.fixture
def serve_settings(settings: Settings, registry_template: Path, tmp_path: Path) -> Settings:
    """Settings on a copy of the trained registry (v1 @production, no canary) and a fresh database."""
    _use_registry(registry_template, tmp_path)
    return load_settings(registry_poll_seconds=POLL, routes={"balance": "banking-agent"}, fallback_route="human")


@pytest.fixture
def client(serve_settings: Settings) -> Iterator[TestClient]:
    """The app, started (models loaded, log writer running) and stopped around the test."""
    with TestClient(create_app(serve_settings)) as c:
        yield c


def route(client: Any, text: str = "what is my bank balance", **extra: Any) -> dict[str, Any]:
    """POST /route and return the JSON answer (asserting 200)."""
    res = client.post("/route", json={"text": text, **extra})
    assert res.status_code == 200, res.text
    return res.json()


def query_rows(settings: Settings) -> dict[str, Any]:
    """Stored queries by id."""
    with store.connect(settings) as conn:
        return {r.id: r for r in conn.execute(sa.select(store.queries))}


def health(client: Any) -> dict[str, Any]:
    """GET /health as JSON."""
    return client.get("/health").json()


# --- routing --------------------------------------------------------------------------------------


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


def test_shutdown_flushes_the_log_buffer(serve_settings: Settings) -> None:
    app = create_app(serve_settings)
    with TestClient(app) as c:
        app.state.runtime.writer.flush_interval = 3600  # nothing is written until shutdown
        ids = [route(c, f"set a timer for {i} minutes")["query_id"] for i in range(5)]
        assert app.state.runtime.writer.queue_depth == 5
    assert set(query_rows(serve_settings)) == set(ids)


# --- models by alias, the split, the registry ------------------------------------------------------


def test_alias_move_is_picked_up_without_restart(client: TestClient, serve_settings: Settings) -> None:
    assert route(client)["model_version"] == "1"
    registry.promote(serve_settings, "2", "production")
    assert wait_for(lambda: health(client)["versions"]["production"] == "2", timeout=60)
    assert {route(client, f"balance please {i}")["model_version"] for i in range(10)} == {"2"}
    registry.rollback(serve_settings)
    assert wait_for(lambda: health(client)["versions"]["production"] == "1", timeout=60)
    assert route(client)["model_version"] == "1"


def test_canary_share_sends_sticky_users_to_staging(client: TestClient, serve_settings: Settings) -> None:
    registry.promote(serve_settings, "2", "staging")
    registry.set_canary_share(serve_settings, 0.5)
    assert wait_for(lambda: health(client)["versions"]["staging"] == "2" and health(client)["canary_share"] == 0.5,
                    timeout=60)
    first = {f"user-{i}": route(client, user_id=f"user-{i}") for i in range(40)}
    variants = {a["variant"] for a in first.values()}
    assert variants == {"production", "staging"}
    for user, a in first.items():  # sticky: the same user lands on the same model again
        again = route(client, "set an alarm", user_id=user)
        assert again["variant"] == a["variant"]
        assert again["model_version"] == ("2" if a["variant"] == "staging" else "1")

    registry.set_canary_share(serve_settings, 0.0)  # the share changes without a restart too
    assert wait_for(lambda: health(client)["canary_share"] == 0.0, timeout=60)
    assert {route(client, user_id=u)["variant"] for u in first} == {"production"}
    registry.clear_staging(serve_settings, "test over")
    assert wait_for(lambda: health(client)["versions"]["staging"] is None, timeout=60)


def test_no_production_model_is_503_and_not_ready(settings: Settings, registry_template: Path,
                                                  tmp_path: Path) -> None:
    _use_registry(registry_template, tmp_path, production=None)
    with TestClient(create_app(load_settings(registry_poll_seconds=POLL))) as c:
        res = c.post("/route", json={"text": "what is my balance"})
        assert res.status_code == 503
        assert res.json()["detail"] == "No active model found: run `intelrouter train`"
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["ready"] is False
        registry.promote(load_settings(), "1", "production")  # a model arrives: served without a restart
        assert wait_for(lambda: c.get("/health").status_code == 200, timeout=60)
        assert route(c)["model_version"] == "1"


def test_empty_tracking_store_is_not_ready(settings: Settings) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["ready"] is False
        assert c.post("/route", json={"text": "hi"}).status_code == 503


# --- feedback and override -------------------------------------------------------------------------


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


# --- auth ----------------------------------------------------------------------------------------------


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


# --- bad input ---------------------------------------------------------------------------------------


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


def test_metrics_count_requests_uncertainty_latency_and_the_log(client: TestClient) -> None:
    for text in ("what is my balance", "set an alarm for 9", "blorp zzzt qq"):
        route(client, text)
    client.post("/route", content=b"{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert 'intelrouter_route_requests_total{label="balance",variant="production"} 1.0' in text
    assert 'intelrouter_route_latency_seconds_count{variant="production"} 3.0' in text
    assert 'intelrouter_http_rejected_total{status="400"} 1.0' in text
    for name in ("intelrouter_log_queue_depth", "intelrouter_log_rows_spilled_total",
                 "intelrouter_log_rows_dropped_total", "intelrouter_uncertain_ratio",
                 "intelrouter_registry_poll_failures_total", "intelrouter_canary_share"):
        assert f"\n{name} " in text, name
    assert 'intelrouter_model_version{alias="production",version="1"} 1.0' in text


def test_latency_histogram_uses_prometheus_le_buckets() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from serving.metrics import LATENCY_BUCKETS, RouterMetrics

    metrics = RouterMetrics(lambda: {"queue_depth": 0, "written": 0, "spilled": 0, "dropped": 0, "write_failures": 0,
                                     "poll_failures": 0, "loads": 0, "load_failures": 0, "canary_share": 0.0,
                                     "versions": {}})
    seconds = [0.0004, LATENCY_BUCKETS[0], 0.003, 0.003, 0.02, 99.0]  # one exactly on a bound, one above them all
    for i, s in enumerate(seconds):
        metrics.observe("production", "a" if i % 2 else "b", i == 5, s)
    samples = {(m.name, tuple(sorted(m.labels.items()))): m.value
               for fam in text_string_to_metric_families(metrics.render().decode()) for m in fam.samples}
    for bound in LATENCY_BUCKETS:
        key = ("intelrouter_route_latency_seconds_bucket", (("le", str(bound)), ("variant", "production")))
        assert samples[key] == sum(s <= bound for s in seconds), bound
    assert samples[("intelrouter_route_latency_seconds_bucket", (("le", "+Inf"), ("variant", "production")))] == 6
    total = samples[("intelrouter_route_latency_seconds_sum", (("variant", "production"),))]
    assert total == pytest.approx(sum(seconds))
    assert samples[("intelrouter_route_requests_total", (("label", "a"), ("variant", "production")))] == 3
    assert samples[("intelrouter_route_uncertain_total", (("variant", "production"),))] == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
BODIES = st.fixed_dictionaries(
    {}, optional={"text": JSON_VALUES | st.text(max_size=300), "user_id": JSON_VALUES, "session_id": JSON_VALUES,
                  "language": JSON_VALUES, "query_id": JSON_VALUES | st.uuids().map(str), "label": JSON_VALUES},
) | JSON_VALUES


def test_fuzzed_requests_never_get_a_5xx(client: TestClient) -> None:
    @hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=st.sampled_from(["/route", "/api/query", "/feedback", "/override"]), body=BODIES,
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


# --- real servers -------------------------------------------------------------------------------------


def _start_mlflow_server(backend: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{backend}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_real_uvicorn_keeps_answering_when_the_mlflow_server_dies(
    serve_settings: Settings, tmp_path: Path
) -> None:
    """`intelrouter serve` on a loopback port, its registry a real `mlflow server` that is then killed."""
    mlflow_port, port = free_port(), free_port()
    tracker = _start_mlflow_server(tmp_path / "mlflow.db", mlflow_port, tmp_path / "mlflow-server.log")
    env = {**os.environ, "INTELROUTER_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
           "INTELROUTER_REGISTRY_POLL_SECONDS": "0.5", "INTELROUTER_ROUTES": '{"balance": "banking-agent"}'}
    server = None
    try:
        assert wait_for(lambda: _up(f"http://127.0.0.1:{mlflow_port}/health"), timeout=120), \
            (tmp_path / "mlflow-server.log").read_text()[-2000:]
        server = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(f"{base}/health"), timeout=120), "intelrouter serve never became ready"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").json()["versions"] == {"production": "1", "staging": None}
            before = [route(http, f"what is my balance {i}", user_id=f"u{i}") for i in range(10)]
            assert {a["route"] for a in before} == {"banking-agent"}

            _stop(tracker, signal.SIGKILL)  # the registry is gone
            assert wait_for(lambda: http.get("/health").json()["registry"]["poll_failures"] >= 1, timeout=120)
            after = [route(http, f"set an alarm for {i}") for i in range(10)]
            assert {(a["label"], a["model_version"]) for a in after} == {("alarm", "1")}
            h = http.get("/health")
            assert h.status_code == 200 and h.json()["ready"] is True
            assert "model registry" in h.json()["registry"]["last_error"]
            qid = after[0]["query_id"]
            assert http.post("/feedback", json={"query_id": qid, "label": "alarm"}).status_code == 200
            assert "intelrouter_registry_poll_failures_total" in http.get("/metrics").text
        # SIGTERM: a graceful shutdown that flushes the log (uvicorn re-raises the signal once done)
        assert _stop(server) in (0, -signal.SIGTERM)
        output = server.stdout.read() if server.stdout else ""
        assert "Application shutdown complete" in output, output[-3000:]
        server = None
    finally:
        if server is not None:
            _stop(server)
        _stop(tracker, signal.SIGKILL)
    assert {a["query_id"] for a in before + after} <= set(query_rows(serve_settings))


@pytest.mark.embedded  # brings its own PostgreSQL server: once per CI run is enough
def test_database_stopped_mid_load_loses_no_query(pg_server: Any, registry_template: Path,
                                                  tmp_path: Path, settings: Settings) -> None:
    _use_registry(registry_template, tmp_path)
    pg_settings = load_settings(database_url=pg_server.url, registry_poll_seconds=5)
    with TestClient(create_app(pg_settings)) as c:
        writer = c.app.state.runtime.writer
        writer.flush_interval = 0.05
        ids = [route(c, f"what is my balance {i}")["query_id"] for i in range(30)]
        assert writer.flush(timeout=30)
        pg_server.stop()
        ids += [route(c, f"set an alarm for {i}")["query_id"] for i in range(60)]  # answers go on
        assert wait_for(lambda: writer.write_failures >= 1, timeout=30)
        assert c.get("/health").json()["log_queue_depth"] > 0
        pg_server.start()
        assert writer.flush(timeout=60)
    rows = query_rows(pg_settings)
    assert set(rows) == set(ids) and len(rows) == 90
    store.dispose_engines()


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


# --- the micro-batcher ----------------------------------------------------------------------------


def test_batcher_answers_each_request_with_its_own_prediction(serve_settings: Settings) -> None:
    import asyncio

    from serving.batcher import MicroBatcher

    router = load_router(f"models:/{serve_settings.model_name}/1", serve_settings.tracking_uri)
    texts = [f"{t} {i}" for i in range(12) for t in ("what is my balance", "set an alarm", "will it rain")]
    want = [router.predict_one(t) for t in texts]

    async def run() -> list[Any]:
        batcher = MicroBatcher()
        got = await asyncio.gather(*[batcher.predict(router, t) for t in texts])
        assert batcher.predicted == len(texts) and batcher.batches < len(texts)  # requests were batched
        batcher.close()
        return got

    assert asyncio.run(run()) == want


def test_batcher_hands_a_model_error_to_the_request(serve_settings: Settings) -> None:
    import asyncio

    from serving.batcher import MicroBatcher

    class Broken:
        def predict_one(self, text: str) -> Any:
            raise ValueError(f"cannot predict {text}")

    async def run() -> None:
        batcher = MicroBatcher()
        for _ in range(2):
            results = await asyncio.gather(*[batcher.predict(Broken(), f"t{i}") for i in range(3)],
                                           return_exceptions=True)
            assert [str(r) for r in results] == ["cannot predict t0", "cannot predict t1", "cannot predict t2"]
        batcher.close()

    asyncio.run(run())


def test_batcher_predicts_small_batches_in_place_and_big_ones_on_the_thread() -> None:
    import asyncio
    import threading

    from serving.batcher import MicroBatcher

    class Recorder:
        def __init__(self) -> None:
            self.threads: list[str] = []

        def predict_one(self, text: str) -> str:
            if text == "bad":
                raise ValueError("cannot predict bad")
            self.threads.append(threading.current_thread().name)
            return text.upper()

    async def run() -> None:
        batcher, model = MicroBatcher(inline_max=3), Recorder()
        loop_thread = threading.current_thread().name
        assert await batcher.predict(model, "alone") == "ALONE"
        assert model.threads == [loop_thread]  # no hand-off for a batch of one
        with pytest.raises(ValueError, match="cannot predict bad"):
            await batcher.predict(model, "bad")  # a lone request's error still reaches it
        model.threads.clear()
        assert await asyncio.gather(*[batcher.predict(model, f"s{i}") for i in range(3)]) == ["S0", "S1", "S2"]
        assert model.threads == [loop_thread] * 3 and batcher.batches == 3  # one batch of three, on the loop
        model.threads.clear()
        got = await asyncio.gather(*[batcher.predict(model, f"t{i}") for i in range(4)])
        assert got == ["T0", "T1", "T2", "T3"]
        assert len(model.threads) == 4 and all(name.startswith("predict") for name in model.threads)  # the worker
        batcher.close()

    asyncio.run(run())
