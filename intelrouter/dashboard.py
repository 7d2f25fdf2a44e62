"""The monitoring dashboard: one offline HTML page of plotly charts (`GET /dashboard`, `intelrouter dashboard`).

`render_series(spec)` draws any page of this small shape (the loop's dashboard and the simulation both feed it):

    {"title": str, "subtitle": str, "errors": [str], "alerts": [str], "notes": [str],   # all but title optional
     "cards": [{"title": str, "value": str | None, "lines": [str], "empty": str}],
     "charts": [{"title": str, "x": [...], "kind": "line" | "bar" | "markers",        # kind: the default
                 "series": {name: [y, ...] | {"y": [...], "x": [...], "kind": ..., "text": [str],  # hover
                                               "labels": [str], "color": str, "axis": "right", "dash": bool}},
                 "percent": bool, "zero": bool, "y_title": str, "right_title": str,
                 "note": str, "empty": str}]}                                            # empty: when no data

A None in `y` is a gap; a chart whose series hold no value shows its `empty` text instead. Text may quote
`code` in backticks; every text is escaped (labels and reasons come from users and data). Plotly's JS comes
from the installed package, inlined (a self-contained file) or from a URL the app serves: never from a CDN.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from intelrouter.config import Settings
from intelrouter.dashboard_data import collect

__all__ = ["collect", "loop_page", "plotly_bundle", "render", "render_series", "rows_to_charts", "write_html",
           "write_series_html"]

TITLE = "IntelRouter monitoring"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")
ACTION_COLORS = {"promote": "#2ca02c", "raise": "#1f77b4", "rollback": "#d62728", "wait": "#7f7f7f"}
GATE_COLORS = {"passed": "#2ca02c", "failed": "#d62728", "unknown": "#7f7f7f"}
# the page may run only its own scripts and draw: no fetch, no font, no image from anywhere
CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "base-uri 'none'; form-action 'none'")
CSS = """
body{font:13px/1.4 $FONT;margin:0;padding:12px 18px;color:#222;background:#f6f7f9}
h1{font-size:18px;margin:0}.sub{color:#666;margin:2px 0 8px}code{background:#eef;padding:0 3px;border-radius:3px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:8px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:200px;flex:1}
.card h2{font-size:13px;color:#666;margin:0;font-weight:600}.card .value{font-size:17px;color:#222;margin-left:6px}
.card ul{margin:0;padding-left:16px;color:#444}.msgs{margin:0 0 8px;padding-left:18px}
.errors li{color:#b00020}.alerts li{color:#8a5300}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:10px}
.chart{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0;padding:6px 8px}
.chart figcaption{font-weight:600}.note{color:#666;margin:0;font-size:12px}.plot{height:250px}
.empty{height:250px;display:flex;align-items:center;justify-content:center;color:#666;text-align:center;padding:0 30px}
""".replace("$FONT", FONT)
DRAW = """(function(){var figs=JSON.parse(document.getElementById("figures").textContent);
if(!window.Plotly){window.dashboardError="plotly.js did not load";return;}
var cfg={displaylogo:false,responsive:true,modeBarButtonsToRemove:["lasso2d","select2d"]};
Promise.all(Object.keys(figs).map(function(id){return Plotly.newPlot(id,figs[id].data,figs[id].layout,cfg);}))
.then(function(){window.dashboardReady=true;},function(e){window.dashboardError=String(e);});})();"""


@functools.cache
def plotly_bundle() -> str:
    """The plotly.js bundle shipped inside the installed plotly package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: Any) -> str:
    """Escaped text with `code` in backticks."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _hover(text: Any) -> str:
    """Escaped hover text, wrapped: plotly reads <br> and entities in it, so nothing from the data is markup."""
    lines = [w for part in str(text).splitlines() for w in (textwrap.wrap(part, 72) or [""])]
    return "<br>".join(_e(line) for line in lines)


def _figure(chart: dict[str, Any]) -> dict[str, Any] | None:
    """The plotly figure of one chart spec, or None when its series hold no value."""
    traces, right = [], False
    for i, (name, raw) in enumerate(chart.get("series", {}).items()):
        s = raw if isinstance(raw, dict) else {"y": raw}
        y = [None if isinstance(v, float) and not math.isfinite(v) else v for v in s.get("y", [])]  # JSON has no NaN
        if all(v is None for v in y):
            continue
        kind, color = s.get("kind", chart.get("kind", "line")), s.get("color", PALETTE[i % len(PALETTE)])
        t: dict[str, Any] = {"type": "bar" if kind == "bar" else "scatter", "name": _e(name), "y": y,
                             "x": list(s.get("x", chart.get("x", range(len(y))))), "marker": {"color": color}}
        if kind != "bar":
            t.update(mode="markers" if kind == "markers" else "lines+markers", connectgaps=False,
                     line={"color": color, "dash": "dot" if s.get("dash") else "solid"})
            t["marker"]["size"] = 10 if kind == "markers" else 6
        if s.get("text"):
            t.update(hovertext=[_hover(v) for v in s["text"]], hovertemplate="%{x}: %{y}<br>%{hovertext}")
        if s.get("labels") and kind != "bar":
            t.update(text=[_e(v) for v in s["labels"]], mode=t["mode"] + "+text", textposition="top center",
                     cliponaxis=False)
        if s.get("axis") == "right":
            t["yaxis"], right = "y2", True
        traces.append(t)
    if not traces:
        return None
    pct = {"tickformat": ".0%", "hoverformat": ".1%"} if chart.get("percent") else {}
    axis = {"gridcolor": "#eee", "zeroline": False, "automargin": True}
    layout: dict[str, Any] = {
        "height": 250, "margin": {"l": 48, "r": 10, "t": 28, "b": 28}, "font": {"family": FONT, "size": 11},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}, "barmode": "group",
        "hovermode": "closest", "hoverlabel": {"align": "left"}, "paper_bgcolor": "#fff", "plot_bgcolor": "#fff",
        "xaxis": axis,
        "yaxis": {**axis, **pct, "title": {"text": _e(chart.get("y_title", ""))},
                  "rangemode": "tozero" if chart.get("zero", True) else "normal"},
    }
    if right:
        layout["yaxis2"] = {"overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero",
                            "automargin": True, "tickmode": "auto",
                            "title": {"text": _e(chart.get("right_title", ""))}}
    return {"data": traces, "layout": layout}


def render_series(spec: dict[str, Any], plotly_js: str = "inline") -> str:
    """One self-contained HTML page for a spec of the documented shape; `plotly_js` is "inline" or a URL."""
    title = spec.get("title") or TITLE
    parts = [f"<header><h1>{_e(title)}</h1>"]
    if spec.get("subtitle"):
        parts.append(f'<p class="sub">{_md(spec["subtitle"])}</p>')
    parts.append("</header>")
    for cls in ("errors", "alerts", "notes"):
        if spec.get(cls):
            parts.append(f'<ul class="msgs {cls}">' + "".join(f"<li>{_md(m)}</li>" for m in spec[cls]) + "</ul>")
    if spec.get("cards"):
        parts.append('<section class="cards">')
        for card in spec["cards"]:
            value = f' <span class="value">{_e(card["value"])}</span>' if card.get("value") is not None else ""
            body = ("<ul>" + "".join(f"<li>{_md(line)}</li>" for line in card.get("lines", [])) + "</ul>"
                    if value else f'<p class="note">{_md(card.get("empty", "–"))}</p>')
            parts.append(f'<div class="card"><h2>{_e(card["title"])}{value}</h2>{body}</div>')
        parts.append("</section>")
    figures: dict[str, Any] = {}
    parts.append('<main class="grid">')
    for i, chart in enumerate(spec.get("charts", [])):
        fig, cid = _figure(chart), f"chart-{i}"
        note = f'<p class="note">{_md(chart["note"])}</p>' if chart.get("note") else ""
        body = (f'<div class="plot" id="{cid}"></div>' if fig else
                f'<div class="empty">{_md(chart.get("empty") or "no data yet")}</div>')
        if fig:
            figures[cid] = fig
        parts.append(f'<figure class="chart"><figcaption>{_e(chart.get("title", ""))}</figcaption>{note}{body}'
                     "</figure>")
    parts.append("</main>")
    # JSON inside <script>: no "<", ">" or "&" may stay literal, so data can never close the element
    payload = json.dumps(figures, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    js = (f"<script>{plotly_bundle()}</script>" if plotly_js == "inline"
          else f'<script src="{_e(plotly_js)}"></script>') if figures else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}{js}"
            f'<script type="application/json" id="figures">{payload}</script>'
            f"<script>{DRAW if figures else 'window.dashboardReady=true;'}</script></body></html>\n")


def _days(since: str, until: str) -> list[str]:
    first, last = date.fromisoformat(since[:10]), date.fromisoformat(until[:10])
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _vname(version: str | None, names: dict[str, str]) -> str:
    if version is None:
        return "other providers"
    return f"v{names[version]}" if names.get(version) else f"version {version}"


def _per_variant(data: dict[str, Any], key: str, days: list[str], names: dict[str, str]) -> dict[str, list]:
    index, series = {d: i for i, d in enumerate(days)}, {}
    for r in data.get("by_version_day", []):
        name = _vname(r["model_version"], names) + (f" · {r['variant']}" if r.get("variant") else "")
        if r["day"] in index:
            series.setdefault(name, [None] * len(days))[index[r["day"]]] = r.get(key)
    return series


def _card(alias: str, row: dict[str, Any] | None, share: float | None, empty: str) -> dict[str, Any]:
    if row is None:
        return {"title": f"@{alias}", "value": None, "empty": empty}
    share_text = "" if share is None else f" at {share:.0%} of users"
    lines = [f"registry version {row['version']}, {row.get('lifecycle') or 'no lifecycle tag'}{share_text}",
             f"test accuracy {_pct(row.get('test_accuracy'))}, macro F1 {_pct(row.get('test_macro_f1'))}",
             f"last 30 days {_pct(row.get('recent_accuracy'))}, threshold "
             + ("–" if row.get("threshold") is None else f"{row['threshold']:.3f}")]
    return {"title": f"@{alias}", "value": _vname(row["version"], {row["version"]: row.get("semver", "")}),
            "lines": lines}


def loop_page(data: dict[str, Any], title: str = TITLE) -> dict[str, Any]:
    """The page spec of the loop's dashboard, from `collect`'s data."""
    days = _days(data["since"], data["until"])
    rep = data.get("report") or {}
    by_day = {d["day"]: d for d in rep.get("days", [])}
    column = lambda key: [by_day.get(d, {}).get(key) for d in days]  # noqa: E731
    names = {r["version"]: r.get("semver", "") for r in data.get("training", [])}
    down = any(e.startswith("model registry") for e in data["errors"])
    no_model = "model registry unreachable: see the error above" if down else "no model yet: run `intelrouter train`"
    prod = rep.get("production") or {}
    cards = [_card("production", data["aliases"].get("production"), None, no_model),
             _card("staging", data["aliases"].get("staging"), data.get("canary_share"),
                   "no canary: the next version that passes the gate runs here first"),
             {"title": f"last {data['days']} days", "value": None if not rep else f"{prod.get('captured', 0)} "
              "production queries", "empty": "store unreachable: see the error above",
              "lines": [f"online accuracy {_pct(prod.get('online_accuracy'))} on {prod.get('labelled', 0)} labels",
                        f"fallback (UNCERTAIN) rate {_pct(prod.get('uncertain_rate'))}",
                        f"review backlog {data['review_backlog']}, samples waiting {data['samples_waiting']}"]}]
    no_traffic = ("no traffic in this window: start `intelrouter serve` and send queries to `POST /route` "
                  "(or `intelrouter capture import FILE`)")
    accuracy = _per_variant(data, "online_accuracy", days, names)
    estimated = column("estimated_accuracy")
    if any(v is not None for v in estimated):
        accuracy["estimated (all traffic)"] = {"y": estimated, "dash": True, "color": "#555"}
    fallback = _per_variant(data, "uncertain_rate", days, names)
    caller = column("caller_fallback_rate")
    if any(v is not None for v in caller):
        fallback["caller-reported (all traffic)"] = {"y": caller, "dash": True, "color": "#555"}
    hist = data.get("history", [])
    if not any(v for key in ("labelled", "needs_review", "new_samples_waiting") for v in column(key)) and not any(
            h["review_backlog"] or h["samples_waiting"] for h in hist):
        hist = []  # nothing captured, labelled or waiting: the empty-state text says more than a line at zero
    canary = data.get("canary", [])
    markers = {a: {"kind": "markers", "color": ACTION_COLORS.get(a, "#333"),
                   "x": [c["time"] for c in canary if c["action"] == a],
                   "y": [c["share"] for c in canary if c["action"] == a],
                   "text": [f"{a}{'' if c['applied'] or a == 'wait' else ' (not applied)'}, canary "
                            f"v{names.get(str(c['version'])) or c['version']}\n{c['reason']}"
                            for c in canary if c["action"] == a]}
               for a in dict.fromkeys(c["action"] for c in canary)}
    train = data.get("training", [])
    gates = {g: {"kind": "markers", "color": GATE_COLORS.get(g, "#333"),
                 "x": [r["created"] for r in train if r["gate"] == g],
                 "y": [r["test_accuracy"] for r in train if r["gate"] == g],
                 "labels": [_vname(r["version"], names) for r in train if r["gate"] == g],
                 "text": [f"{_vname(r['version'], names)} (registry version {r['version']}): "
                          f"{r.get('lifecycle') or '?'}\n" + "\n".join(r["reasons"]) for r in train if r["gate"] == g]}
             for g in dict.fromkeys(r["gate"] for r in train)}
    charts = [
        {"title": "Online accuracy (human labels) per day", "x": days, "series": accuracy, "percent": True,
         "zero": False, "empty": "no human labels on answers in this window: they come from `POST /feedback`, "
         "`POST /override` and Label Studio review (`intelrouter review sync`)",
         "note": "" if any(v is not None for v in estimated) else "estimated accuracy: not measured yet"},
        {"title": "Fallback (UNCERTAIN) rate per day", "x": days, "series": fallback, "percent": True,
         "empty": no_traffic,
         "note": "" if any(v is not None for v in caller) else "caller-reported fallback rate: not measured yet"},
        {"title": "Auto-approval rate per day (of triaged queries)", "x": days, "percent": True,
         "series": {"auto-approved": column("auto_approval_rate")},
         "empty": "nothing triaged in this window: `intelrouter capture triage` (the daily capture flow runs it)"},
        {"title": "Review: labels per day and backlog", "x": days, "kind": "bar", "right_title": "backlog",
         "series": {"human labels": column("labelled"), "sent to review": column("needs_review"),
                    "review backlog": {"kind": "line", "axis": "right", "x": [h["time"] for h in hist],
                                       "y": [h["review_backlog"] for h in hist], "color": "#d62728"}},
         "empty": no_traffic},
        {"title": "Canary share and decisions", "percent": True, "series": {
            "share": {"x": [c["time"] for c in canary], "y": [c["share"] for c in canary], "color": "#aaa"},
            **markers},
         "empty": "no canary decisions in this window: `intelrouter canary check` (hourly flow) decides while a "
                  "version is on @staging"},
        {"title": "Training history: held-out accuracy by gate outcome", "series": gates, "percent": True,
         "zero": False, "empty": "no model trained yet: run `intelrouter train`"},
        {"title": "Samples waiting for training", "x": days, "kind": "bar", "right_title": "waiting",
         "series": {"new labelled samples": column("new_samples_waiting"),
                    "waiting for training": {"kind": "line", "axis": "right", "x": [h["time"] for h in hist],
                                             "y": [h["samples_waiting"] for h in hist], "color": "#2ca02c"}},
         "empty": "no labelled samples yet: `intelrouter data import FILE`, feedback, or review"},
    ]
    subtitle = (f"model `{data['model_name']}` · {data['since'][:10]} to {data['until'][:10]} ({data['days']} days) "
                f"· generated {data['generated_at'].replace('T', ' ')} UTC" + (" · no alerts" if rep and not
                                                                                 data.get("alerts") else ""))
    return {"title": title, "subtitle": subtitle, "errors": data["errors"], "cards": cards, "charts": charts,
            "alerts": [a["message"] for a in data.get("alerts", [])]}


def render(data: dict[str, Any], title: str = TITLE, plotly_js: str = "inline") -> str:
    """The loop's dashboard page; plotly_js is "inline" (a self-contained file) or the URL of the served bundle."""
    return render_series(loop_page(data, title), plotly_js)


def rows_to_charts(rows: Iterable[dict[str, Any]], metrics: dict[str, str], x: str = "day", by: str = "policy",
                   percent: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One line chart per metric (key -> title), one series per `by` value: e.g. a simulation's daily rows."""
    rows, percent = list(rows), set(percent)
    xs = sorted({r[x] for r in rows})
    index = {v: i for i, v in enumerate(xs)}
    charts = []
    for key, title in metrics.items():
        series: dict[str, list] = {}
        for r in rows:
            series.setdefault(str(r.get(by)), [None] * len(xs))[index[r[x]]] = r.get(key)
        charts.append({"title": title, "x": xs, "series": series, "percent": key in percent,
                       "empty": f"no {title.lower()} in this run"})
    return charts


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # a page to share, not a secret (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_series_html(spec: dict[str, Any], path: Path) -> Path:
    """Write a self-contained page for a spec of the documented shape (atomically)."""
    return _atomic_write(path, render_series(spec))


def write_html(settings: Settings, path: Path, days: int | None = None, now: datetime | None = None) -> Path:
    """Collect and write the loop's dashboard as one self-contained HTML file (atomically)."""
    return _atomic_write(path, render(collect(settings, days, now)))
