"""Monitoring: the numbers per day and per model version, the seed's alert checklist, the webhook."""

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from devservers.ports import free_port
from intelrouter import report as monitoring
from intelrouter.capture import log_queries, record_outcomes
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import record_feedback, record_override
from intelrouter.triage import triage

NOW = datetime(2026, 3, 10, 12, 0, 0)


def _query(qid: str, day: int, *, version: str | None = "1", variant: str | None = "production", top: str = "easy",
           uncertain: bool = False, provider: str = "intelrouter", confidence: float = 0.9) -> dict:
    return {"id": qid, "text": f"query {qid}", "predicted_label": "UNCERTAIN" if uncertain else top, "top_label": top,
            "confidence": confidence, "uncertain": uncertain, "provider": provider, "model_version": version,
            "variant": variant, "created_at": f"2026-03-{day:02d}T09:00:00"}


def _seed(settings: Settings) -> None:
    rows = [
        # 9 March: production v1, 4 queries (1 uncertain); a teacher query that triage auto-approves
        _query("a1", 9), _query("a2", 9), _query("a3", 9, uncertain=True, confidence=0.3), _query("a4", 9, top="hard"),
        _query("t1", 9, version=None, variant=None, provider="teacher", confidence=0.95, top="weather"),
        # 10 March: production v1 and the v2 canary
        _query("b1", 10), _query("b2", 10, top="medium"),
        _query("c1", 10, version="2", variant="staging"), _query("c2", 10, version="2", variant="staging"),
        # outside the 7-day window
        _query("old", 1),
    ]
    log_queries(settings, rows)
    triage(settings)
    for qid, label in [("a1", "easy"), ("a2", "medium"), ("a4", "hard"), ("b1", "easy"), ("b2", "hard"),
                       ("c1", "easy"), ("c2", "easy"), ("old", "hard")]:
        record_feedback(settings, qid, label)
    record_override(settings, "a2", "easy")  # the user corrects their feedback: now a1, a2, a4 right on 9 March


def test_numbers_per_day_and_per_version(settings: Settings) -> None:
    _seed(settings)
    rep = monitoring.collect(settings, days=7, now=NOW)
    days = {d["day"]: d for d in rep.days}
    assert set(days) == {"2026-03-09", "2026-03-10"}  # 1 March is outside the window
    d9 = days["2026-03-09"]
    assert (d9["captured"], d9["auto_approved"], d9["labelled"], d9["needs_review"]) == (5, 1, 3, 4)
    assert d9["auto_approval_rate"] == 0.2 and d9["uncertain_rate"] == 0.2 and d9["online_accuracy"] == 1.0
    d10 = days["2026-03-10"]
    assert (d10["captured"], d10["labelled"], d10["online_accuracy"]) == (4, 4, 0.75)
    versions = {(v["model_version"], v["variant"]): v for v in rep.versions}
    assert versions[("1", "production")]["captured"] == 6
    assert versions[("1", "production")]["online_accuracy"] == round(4 / 5, 4)
    assert versions[("2", "staging")]["online_accuracy"] == 1.0
    assert rep.production == {"versions": ["1"], "captured": 6, "uncertain_rate": round(1 / 6, 4), "labelled": 5,
                              "online_accuracy": 0.8, "outcomes_reported": 0, "caller_fallback_rate": None}
    assert rep.review_backlog == 9  # every router query (the old one too) waits for review; the teacher's did not
    assert rep.samples_waiting == 9  # 8 feedback labels + 1 auto-approved, none trained on yet


def test_alerts_fire_past_floor_ceiling_and_waiting(settings: Settings) -> None:
    _seed(settings)
    quiet = monitoring.collect(settings, now=NOW)
    assert quiet.alerts == []  # too little evidence by default (alert_min_samples=20), 9 waiting < 1000
    strict = load_settings(alert_min_samples=5, online_accuracy_floor=0.9, uncertain_rate_ceiling=0.1,
                           alert_waiting=9)
    kinds = {a.kind: a for a in monitoring.collect(strict, now=NOW).alerts}
    assert set(kinds) == {"online_accuracy", "uncertain_rate", "samples_waiting"}
    assert kinds["online_accuracy"].value == 0.8 and kinds["online_accuracy"].limit == 0.9
    assert "80.0%" in kinds["online_accuracy"].message and "5 feedback labels" in kinds["online_accuracy"].message
    lenient = load_settings(alert_min_samples=5, online_accuracy_floor=0.8, uncertain_rate_ceiling=0.2,
                            alert_waiting=10)
    assert monitoring.collect(lenient, now=NOW).alerts == []  # at the floor/ceiling is not past it


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_receives_alerts_as_json_and_a_dead_one_only_logs(settings: Settings, caplog) -> None:  # noqa: ANN001
    _seed(settings)
    server = HTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        alerting = load_settings(alert_waiting=3, alert_webhook_url=url)
        rep = monitoring.run_report(alerting, now=NOW)
        assert Path(rep.path).is_file() and json.loads(Path(rep.path).read_text())["samples_waiting"] == 9
        ctype, payload = _Hook.received[-1]
        assert ctype == "application/json"
        assert [a["kind"] for a in payload["alerts"]] == ["samples_waiting"]
        assert payload["report"] == rep.path and payload["samples_waiting"] == 9
    finally:
        server.shutdown()
        server.server_close()
    dead = load_settings(alert_waiting=3, alert_webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    rep = monitoring.collect(dead, now=NOW)
    assert monitoring.notify(dead, rep) is False
    assert any("ALERT samples_waiting" in r.message for r in caplog.records)
    assert any("webhook" in r.message and "failed" in r.message for r in caplog.records)


def test_no_alerts_means_no_post(settings: Settings) -> None:
    _seed(settings)
    _Hook.received.clear()
    calm = load_settings(alert_webhook_url=f"http://127.0.0.1:{free_port()}/never")
    assert monitoring.notify(calm, monitoring.collect(calm, now=NOW)) is None


def test_empty_store_reports_zeros(settings: Settings) -> None:
    rep = monitoring.collect(settings, now=NOW)
    assert rep.days == [] and rep.versions == [] and rep.alerts == []
    assert rep.production["online_accuracy"] is None and rep.samples_waiting == 0
    assert "No alerts." in monitoring.to_markdown(rep)


def test_cli_report_prints_tables_and_writes_json(settings: Settings) -> None:
    _seed(settings)
    result = subprocess.run([sys.executable, "-m", "cli", "report", "--days", "30"],
                            capture_output=True, text=True, env={**os.environ, "INTELROUTER_ALERT_WAITING": "5"},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "samples_waiting" in result.stdout and "Per model version" in result.stdout
    files = list((settings.data_dir / "logs").glob("monitoring-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["samples_waiting"] == 9 and data["alerts"][0]["kind"] == "samples_waiting"
    as_json = subprocess.run([sys.executable, "-m", "cli", "report", "--json"], capture_output=True,
                             text=True, env=dict(os.environ), timeout=120)
    assert json.loads(as_json.stdout)["review_backlog"] == 9


def test_caller_reported_fallback_rate_per_day_version_and_production(settings: Settings) -> None:
    _seed(settings)
    record_outcomes(settings, [
        {"query_id": "a1", "route_taken": "llm"}, {"query_id": "a2", "route_taken": "opensearch"},  # 9 March
        {"query_id": "b1", "route_taken": "HUMAN"}, {"query_id": "c1", "route_taken": "fallback"},  # 10 March
        {"query_id": "c2", "route_taken": "php"}, {"query_id": "old", "route_taken": "llm"},  # 1 March: outside
    ])
    rep = monitoring.collect(settings, days=7, now=NOW)
    days = {d["day"]: (d["outcomes_reported"], d["caller_fallback_rate"], d["uncertain_rate"]) for d in rep.days}
    assert days == {"2026-03-09": (2, 0.5, 0.2), "2026-03-10": (3, round(2 / 3, 4), 0.0)}
    versions = {(v["model_version"], v["variant"]): (v["outcomes_reported"], v["caller_fallback_rate"])
                for v in rep.versions}
    assert versions == {("1", "production"): (3, round(2 / 3, 4)), ("2", "staging"): (2, 0.5), (None, None): (0, None)}
    assert (rep.production["outcomes_reported"], rep.production["caller_fallback_rate"]) == (3, round(2 / 3, 4))
    markdown = monitoring.to_markdown(rep)
    assert "## Caller-reported outcomes" in markdown and "| 2026-03-10 | 3 | 66.7% | 0.0% |" in markdown
    # llm no longer counts as a fallback; the router's own fallback route always does
    narrow = load_settings(fallback_routes="human", fallback_route="fallback")
    days = {d["day"]: d["caller_fallback_rate"] for d in monitoring.collect(narrow, days=7, now=NOW).days}
    assert days == {"2026-03-09": 0.0, "2026-03-10": round(2 / 3, 4)}


def test_no_reported_outcome_is_not_a_zero_rate(settings: Settings) -> None:
    _seed(settings)
    rep = monitoring.collect(settings, days=7, now=NOW)
    assert all(d["caller_fallback_rate"] is None and d["outcomes_reported"] == 0 for d in rep.days)
    assert "No caller reported what it did with an answer" in monitoring.to_markdown(rep)


class _Refusing(BaseHTTPRequestHandler):
    """A webhook endpoint that answers 404 (a rotated or mistyped token)."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_webhook_url_never_reaches_a_log(settings: Settings, caplog) -> None:  # noqa: ANN001
    """The URL is a secret (Slack-style hooks carry their token in the path) and logs go to the Prefect API."""
    import logging

    _seed(settings)
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines included
    refusing = HTTPServer(("127.0.0.1", free_port()), _Refusing)
    taking = HTTPServer(("127.0.0.1", free_port()), _Hook)
    for server in (refusing, taking):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "T0KEN-b7e1c9"
    try:
        for port, expected in ((refusing.server_port, False), (free_port(), False), (taking.server_port, True)):
            hooked = load_settings(alert_waiting=3, alert_webhook_url=f"http://127.0.0.1:{port}/services/{token}")
            assert monitoring.notify(hooked, monitoring.collect(hooked, now=NOW)) is expected
    finally:
        for server in (refusing, taking):
            server.shutdown()
            server.server_close()
    assert any("alert webhook failed: HTTP 404" in r.getMessage() for r in caplog.records)
    assert any("alert webhook failed: ConnectError" in r.getMessage() for r in caplog.records)
    assert token not in caplog.text and all(token not in r.getMessage() for r in caplog.records)


# --- estimated accuracy, calibration and drift (issue 17) ----------------------------------------------------


def test_estimated_accuracy_per_day_and_version_beside_the_labels(settings: Settings) -> None:
    _seed(settings)
    rep = monitoring.collect(settings, days=7, now=NOW)
    days = {d["day"]: d for d in rep.days}
    # the router's own answers, UNCERTAIN included (a3 at 0.3); the teacher's captured t1 is not one of them
    assert days["2026-03-09"]["estimated_accuracy"] == 0.75 and days["2026-03-10"]["estimated_accuracy"] == 0.9
    versions = {(v["model_version"], v["variant"]): v for v in rep.versions}
    assert versions[("1", "production")]["estimated_accuracy"] == round(4.8 / 6, 4)
    assert versions[("1", "production")]["labelled_confidence"] == 0.9  # a1, a2, a4, b1, b2: all at 0.9
    assert versions[(None, None)]["estimated_accuracy"] is None
    rows = {(r["day"], r["model_version"], r["variant"]): r for r in rep.estimates}
    assert set(rows) == {("2026-03-09", "1", "production"), ("2026-03-10", "1", "production"),
                         ("2026-03-10", "2", "staging")}
    assert rows[("2026-03-09", "1", "production")] == {
        "day": "2026-03-09", "model_version": "1", "variant": "production", "answered": 4, "estimated_accuracy": 0.75,
        "labelled": 3, "correct": 3, "online_accuracy": 1.0, "labelled_confidence": 0.9}
    markdown = monitoring.to_markdown(rep)
    assert "| 2026-03-10 | 2 | staging | 2 | 90.0% | 2 | 100.0% | 90.0% |" in markdown


def _answered_and_labelled(settings: Settings, router, frame, tag: str, when: datetime) -> None:  # noqa: ANN001
    """The router's answers on the rows as production v1's logged queries, each labelled by a user with its truth."""
    from intelrouter import store
    from intelrouter.groundtruth import upsert_label

    texts = frame["text"].tolist()
    log_queries(settings, [{"id": f"{tag}-{i}", "text": t, "predicted_label": p.label, "top_label": p.top_label,
                            "confidence": p.confidence, "uncertain": p.uncertain, "model_version": "1",
                            "variant": "production", "created_at": when}
                           for i, (t, p) in enumerate(zip(texts, router.predict(texts), strict=True))])
    with store.connect(settings) as conn:
        for i, (text, label) in enumerate(zip(texts, frame["label"], strict=True)):
            upsert_label(conn, query_id=f"{tag}-{i}", text=text, label=label, source="feedback",
                         shares=settings.split_shares)


def test_the_estimate_of_a_calibrated_model_is_its_labelled_accuracy_and_drifted_calibration_alerts(
        settings: Settings) -> None:
    import shadow_support as support

    test = support.inscope("test")  # 900 in-scope CLINC150 queries of 30 intents, with their true labels
    _answered_and_labelled(settings, support.small(), test, "calibrated", NOW - timedelta(hours=3))
    rep = monitoring.collect(settings, now=NOW)
    (prod,) = [v for v in rep.versions if v["variant"] == "production"]
    assert prod["labelled"] == 900 and 0.8 < prod["online_accuracy"] < 0.95
    assert abs(prod["estimated_accuracy"] - prod["online_accuracy"]) <= 0.02
    assert [a.kind for a in rep.alerts] == []
    later = NOW + timedelta(days=30)  # a window of its own: the same answers from an over-confident copy
    _answered_and_labelled(settings, support.miscalibrated(support.small(), 5.0), test, "over", later)
    rep = monitoring.collect(settings, now=later + timedelta(hours=1))
    (alert,) = [a for a in rep.alerts if a.kind == "calibration_drift"]
    assert alert.value > 0.05 and alert.limit == settings.estimate_divergence_bound
    assert "over-confident" in alert.message and "on 900 labels" in alert.message


def _served(settings: Settings, router, texts: list[str], tag: str, when: datetime) -> None:  # noqa: ANN001
    """The router's answers on the texts as queries production v1 served."""
    log_queries(settings, [{"id": f"{tag}-{i}", "text": t, "predicted_label": p.label, "top_label": p.top_label,
                            "confidence": p.confidence, "uncertain": p.uncertain, "model_version": "1",
                            "variant": "production", "created_at": when}
                           for i, (t, p) in enumerate(zip(texts, router.predict(texts), strict=True))])


def test_drift_of_production_traffic_against_its_training_data(settings: Settings) -> None:
    import shadow_support as support
    from training_support import seed_ml_data

    from intelrouter.jobs import train
    from intelrouter.loading import load_version

    # ground truth: 30 CLINC150 intents (their train rows, val with out-of-scope rows, half the in-scope test rows)
    test = support.inscope("test")
    rows = [{"text": r.text, "label": r.label, "split": split} for split, part in
            (("train", support.clinc()["train"]), ("val", support.clinc()["val"]), ("test", test.iloc[::2]))
            for r in part.itertuples()]
    seed_ml_data(settings, rows)
    assert train(settings).lifecycle == "production"
    router = load_version(settings, "1")
    ref = router.info["drift_reference"]  # stored with the model by the training job
    assert len(ref["label_counts"]) == 30 and ref["held_out_rows"] == 450 and ref["unseen_share"] is not None

    assert monitoring.add_drift(settings, monitoring.collect(settings, now=NOW)).drift["status"].startswith(
        "no queries served by v1")
    _served(settings, router, test.iloc[1::2]["text"].tolist(), "same", NOW - timedelta(hours=2))  # the other half
    calm = monitoring.run_report(settings, now=NOW)
    assert calm.drift["status"] == "no drift" and calm.drift["queries"] == 450
    assert not calm.drift["labels"]["drifted"] and not calm.drift["confidences"]["drifted"]
    assert calm.drift["labels"]["threshold"] == calm.drift["confidences"]["threshold"] == settings.drift_psi_threshold
    assert calm.drift["unseen_rise"] < settings.drift_unseen_share_ceiling
    assert not [a for a in calm.alerts if a.kind in ("label_drift", "confidence_drift", "unseen_words")]

    later = NOW + timedelta(days=20)  # a window of its own: out-of-scope traffic only
    clinc_test = support.clinc()["test"]
    _served(settings, router, clinc_test.loc[clinc_test["label"] == "oos", "text"].tolist(), "oos",
            later - timedelta(hours=2))
    shifted = monitoring.run_report(settings, now=later)
    assert shifted.drift["status"] == "drift"
    kinds = {a.kind: a for a in shifted.alerts}
    assert {"label_drift", "confidence_drift", "unseen_words"} <= set(kinds)
    assert kinds["label_drift"].value == shifted.drift["labels"]["statistic"] > settings.drift_psi_threshold
    assert kinds["confidence_drift"].value == shifted.drift["confidences"]["statistic"] > settings.drift_psi_threshold
    saved = json.loads(Path(shifted.path).read_text())
    assert saved["drift"]["unseen_share"] > saved["drift"]["unseen_reference"] + settings.drift_unseen_share_ceiling
    assert "## Drift of production traffic" in monitoring.to_markdown(shifted)
