"""The dashboard: its data from a store that went through the loop, the page, empty states, escaping, the endpoint."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import DAYS, PRODUCTION, STAGING, build_loop
from fastapi.testclient import TestClient

from devservers.ports import free_port
from intelrouter import canary, dashboard, lifecycle, registry, store
from intelrouter.canary import CanaryState, Decision, VariantStats
from intelrouter.capture import log_queries, record_outcomes
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import record_feedback
from intelrouter.jsonfiles import write_report
from serving.app import create_app
from serving.dashboard import PageCache

HOSTILE = "<script>alert(1)</script>"
CHARTS = 7


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store after three trainings and three days of traffic, canary checks and reports."""
    return build_loop(tmp_path_factory.mktemp("loop"))


def figures(page: str) -> dict[str, Any]:
    """The plotly figures a page draws (the JSON it hands to plotly.js)."""
    raw = re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_collect_reads_the_whole_loop(loop: dict[str, Any]) -> None:
    settings, versions = loop["settings"], loop["versions"]
    data = dashboard.collect(settings)
    assert data["errors"] == [] and data["days"] == settings.report_days

    prod, staging = data["aliases"]["production"], data["aliases"]["staging"]
    assert (prod["version"], prod["semver"]) == (versions["production"].version, versions["production"].semver)
    assert (staging["version"], staging["semver"]) == (versions["staging"].version, versions["staging"].semver)
    assert prod["test_accuracy"] == pytest.approx(versions["production"].metrics["test_accuracy"], abs=1e-4)
    assert prod["threshold"] == pytest.approx(versions["production"].threshold, abs=1e-6)
    assert prod["lifecycle"] == "production" and staging["lifecycle"] == "canary"
    assert data["canary_share"] == 1.0  # raised twice: 10 % -> 50 % -> 100 %

    by_version = {r["version"]: r for r in data["training"]}
    assert [r["version"] for r in data["training"]] == [v.version for v in versions.values()]  # oldest first
    rejected = by_version[versions["rejected"].version]
    assert rejected["gate"] == "failed" and rejected["lifecycle"] == "rejected"
    assert rejected["reasons"] == versions["rejected"].gate.reasons and any("regression" in r
                                                                             for r in rejected["reasons"])
    assert by_version[versions["staging"].version]["gate"] == "passed"

    assert [(c["action"], c["share_before"], c["share"]) for c in data["canary"]] == [
        ("wait", 0.1, 0.1), ("raise", 0.1, 0.5), ("raise", 0.5, 1.0)]
    assert "need 10 feedback labels" in data["canary"][0]["reason"]
    assert all(c["version"] == versions["staging"].version for c in data["canary"])

    rows = {(r["day"], r["model_version"], r["variant"]): r for r in data["by_version_day"]}
    assert len(rows) == 3 * len(DAYS)  # production, canary and the teacher's answers, each day
    for d in DAYS:
        day = (loop["midnight"] - timedelta(days=d.ago)).date().isoformat()
        p, s = rows[(day, versions["production"].version, "production")], rows[(day, versions["staging"].version,
                                                                                "staging")]
        assert (p["captured"], p["labelled"], s["captured"], s["labelled"]) == (PRODUCTION, PRODUCTION, STAGING,
                                                                                  STAGING)
        assert p["online_accuracy"] == round(1 - d.wrong_production / PRODUCTION, 4)
        assert s["online_accuracy"] == round(1 - d.wrong_staging / STAGING, 4)
        assert p["uncertain_rate"] == round(d.uncertain / PRODUCTION, 4) and s["uncertain_rate"] == 0.0
        assert rows[(day, None, None)]["captured"] == d.teacher

    with store.connect(settings) as conn:
        assert data["samples_waiting"] == store.samples_waiting(conn)
    history = data["history"]
    assert len(history) == len(DAYS) + 1  # a monitoring report at the end of each day, and now
    backlog = [h["review_backlog"] for h in history]
    assert backlog == sorted(backlog) and backlog[0] > 0 and backlog[-1] == data["review_backlog"]


def test_page_draws_every_chart_and_the_header(loop: dict[str, Any], tmp_path: Path) -> None:
    settings, versions = loop["settings"], loop["versions"]
    path = dashboard.write_html(settings, tmp_path / "out" / "dashboard.html")
    page = path.read_text(encoding="utf-8")
    assert list(path.parent.iterdir()) == [path]  # written atomically: no temporary file left behind
    figs = figures(page)
    assert len(figs) == CHARTS and 'class="empty"' not in page
    for fig in figs.values():
        assert fig["data"] and all(len(t["x"]) == len(t["y"]) > 0 for t in fig["data"])
    assert plotly_inlined(page)
    rest = page.replace(dashboard.plotly_bundle(), "")
    assert not re.search(r"src=|href=|@import|url\(|//[a-z]", rest)  # loads nothing: no CDN, no font, no image
    assert f"v{versions['production'].semver}" in page and f"v{versions['staging'].semver}" in page
    assert "canary at 100% of users" in page
    # the report measures estimated accuracy (issue 17): drawn beside the labelled one; the caller's rate is not yet
    assert "estimated (all traffic)" in {t["name"] for t in figs["chart-0"]["data"]}
    assert "estimated accuracy: not measured yet" not in page
    assert "caller-reported fallback rate: not measured yet" in page
    canary_fig = figs["chart-4"]
    assert {t["name"] for t in canary_fig["data"]} == {"share", "wait", "raise"}
    training = {t["name"]: t for t in figs["chart-5"]["data"]}
    assert set(training) == {"passed", "failed"} and "regression" in training["failed"]["hovertext"][0]


def plotly_inlined(page: str) -> bool:
    """The page carries plotly.js itself (the static copy must open with no server)."""
    return dashboard.plotly_bundle()[:2000] in page


def test_estimated_and_caller_reported_rates_are_drawn_when_present(loop: dict[str, Any]) -> None:
    data = dashboard.collect(loop["settings"])
    for row in data["report"]["days"]:
        row.update(estimated_accuracy=0.9, caller_fallback_rate=0.2)
    charts = dashboard.loop_page(data)["charts"]
    estimated = charts[0]["series"]["estimated (all traffic)"]["y"]
    assert estimated.count(0.9) == len(data["report"]["days"]) and not charts[0]["note"]
    assert "caller-reported (all traffic)" in charts[1]["series"] and not charts[1]["note"]
    assert "not measured yet" not in dashboard.render(data)


def test_empty_store_says_what_to_do(settings: Settings) -> None:
    data = dashboard.collect(settings)
    assert data["errors"] == [] and data["aliases"] == {"production": None, "staging": None}
    page = dashboard.render(data)
    assert "no model yet: run <code>intelrouter train</code>" in page
    assert page.count('class="empty"') == CHARTS and figures(page) == {}
    assert "no traffic in this window" in page and "no model trained yet" in page
    assert not plotly_inlined(page) and len(page) < 50_000  # nothing to draw: no 4 MB of plotly.js


def test_unreachable_registry_and_store_give_an_empty_state_page(tmp_path: Path) -> None:
    down = load_settings(data_dir=tmp_path / "data", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
                         database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    data = dashboard.collect(down)
    assert [e.split(":")[0] for e in data["errors"]] == ["store", "model registry"]
    assert "unreachable" in data["errors"][1]
    page = dashboard.render(data)
    assert "model registry unreachable: see the error above" in page and "store unreachable" in page
    assert page.count('class="empty"') == CHARTS


def test_hostile_text_is_escaped_everywhere(settings: Settings) -> None:
    log_queries(settings, [{"id": "q1", "text": "hi", "predicted_label": "easy", "top_label": "easy",
                            "confidence": 0.9, "model_version": HOSTILE, "variant": "production"}])
    record_feedback(settings, "q1", "easy")
    client = registry.get_client(settings)
    client.create_registered_model(settings.model_name)
    (settings.data_dir / "model").mkdir(parents=True, exist_ok=True)
    version = client.create_model_version(settings.model_name, source=str(settings.data_dir / "model")).version
    registry.tag_version(settings, version, {"semver": HOSTILE, "test_accuracy": "0.9", "gate": "failed",
                                          "gate_reasons": f"label {HOSTILE} got worse", "lifecycle": HOSTILE})
    lifecycle.promote(settings, version, "production")
    write_report(settings, "training-router-v9.9.9.json", {"version": "77", "semver": HOSTILE, "gate": {
        "passed": False, "reasons": [HOSTILE]}, "created_at": store.utcnow().isoformat()})
    state = CanaryState(VariantStats("1", 20, 18), VariantStats(HOSTILE, 20, 10), 0.1, 50.0)
    canary.record(settings, state, Decision("rollback", f"worse on {HOSTILE}"), applied=False)

    page = dashboard.render(dashboard.collect(settings))
    assert HOSTILE not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert page.count("<script") == 3  # plotly.js, the figures' JSON, the drawing code: nothing else runs
    names = json.dumps(figures(page))
    assert "&lt;script&gt;" in names and HOSTILE not in names  # plotly reads entities in names and hover text


def test_per_version_day_rows(settings: Settings) -> None:
    when = "2026-03-09T09:00:00"
    log_queries(settings, [
        {"id": f"{v}{i}", "text": f"q {v}{i}", "predicted_label": "UNCERTAIN" if i == 0 else "easy",
         "top_label": "easy", "confidence": 0.5, "uncertain": i == 0, "model_version": v, "variant": variant,
         "created_at": when} for v, variant in (("1", "production"), ("2", "staging")) for i in range(4)])
    for qid, label in (("10", "easy"), ("11", "hard"), ("20", "easy")):
        record_feedback(settings, qid, label)
    record_outcomes(settings, [{"query_id": "10", "route_taken": "human"}, {"query_id": "11", "route_taken": "php"}])
    data = dashboard.collect(settings, days=2, now=datetime(2026, 3, 10, 12))
    assert data["by_version_day"] == [
        {"day": "2026-03-09", "model_version": "1", "variant": "production", "captured": 4, "uncertain_rate": 0.25,
         "labelled": 2, "online_accuracy": 0.5, "outcomes_reported": 2, "caller_fallback_rate": 0.5},
        {"day": "2026-03-09", "model_version": "2", "variant": "staging", "captured": 4, "uncertain_rate": 0.25,
         "labelled": 1, "online_accuracy": 1.0, "outcomes_reported": 0, "caller_fallback_rate": None},
    ]


def test_endpoint_needs_the_key_and_serves_plotly_from_the_package(loop: dict[str, Any]) -> None:
    keyed = loop["settings"].model_copy(update={"api_key": "s3cret"})
    with TestClient(create_app(keyed)) as client:
        assert client.get("/dashboard").status_code == 401
        assert client.get("/dashboard", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/dashboard", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
        assert len(figures(ok.text)) == CHARTS and not plotly_inlined(ok.text)
        src = re.search(r'<script src="([^"]+)"></script>', ok.text).group(1)
        assert src.startswith("/dashboard/plotly.js?v=")
        js = client.get(src)
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert js.headers["content-encoding"] == "gzip" and "max-age=31536000" in js.headers["cache-control"]
        assert js.text == dashboard.plotly_bundle()
        plain = client.get("/dashboard/plotly.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == js.content
        assert client.get("/dashboard?days=0", headers={"Authorization": "Bearer s3cret"}).status_code == 422


def test_page_cache_reuses_a_page_until_it_is_stale() -> None:
    now = [100.0]
    cache, built = PageCache(seconds=10, clock=lambda: now[0]), []

    def build() -> str:
        built.append(1)
        return f"page {len(built)}"

    async def visits() -> list[str]:
        pages = [await cache.get(None, build)]
        now[0] += 9.9
        pages.append(await cache.get(None, build))
        pages.append(await cache.get(3, build))  # another window is another page
        now[0] += 10
        pages.append(await cache.get(3, build))
        return pages

    assert asyncio.run(visits()) == ["page 1", "page 1", "page 2", "page 3"]


def test_simulation_rows_make_a_page(tmp_path: Path) -> None:
    rows = [{"day": d, "policy": p, "heldout_accuracy": acc, "human_labels": n}
            for d, p, acc, n in (("d1", "weekly", 0.8, 10), ("d2", "weekly", 0.85, 12), ("d1", "daily", 0.82, 9),
                                 ("d2", "daily", float("nan"), 0))]
    charts = dashboard.rows_to_charts(rows, {"heldout_accuracy": "Held-out accuracy", "human_labels": "Labels"},
                                      percent=["heldout_accuracy"])
    assert charts[0]["series"]["weekly"] == [0.8, 0.85] and charts[0]["percent"] and not charts[1]["percent"]
    path = dashboard.write_series_html({"title": f"Simulation {HOSTILE}", "charts": charts}, tmp_path / "sim.html")
    page = path.read_text(encoding="utf-8")
    figs = figures(page)
    assert len(figs) == 2 and HOSTILE not in page and plotly_inlined(page)
    assert figs["chart-0"]["data"][1]["y"] == [0.82, None]  # a NaN is a gap: JSON.parse would refuse it
