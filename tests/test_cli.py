"""The CLI as a user meets it: --help everywhere, the README's foundation walk-through, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from conftest import DATASETS

from cli.main import app
from intelrouter.config import Settings


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `intelrouter ARGS` in a subprocess with the test's environment."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _commands(group: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append((*prefix, name))
        if hasattr(cmd, "list_commands"):
            out += _commands(cmd, (*prefix, name))
    return out


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    root = typer.main.get_command(app)
    commands = _commands(root)
    assert ("capture", "triage") in commands and ("export",) in commands
    for path in commands:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Usage" in result.output


def test_serve_with_workers_opens_the_registry_once_before_they_start(settings: Settings,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers creating a new SQLite registry at once collide; the parent creates it before forking them."""
    import uvicorn
    from typer.testing import CliRunner

    registry_db = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.append((kw["workers"], registry_db.exists())))
    assert CliRunner().invoke(app, ["serve", "--workers", "1"]).exit_code == 0
    assert seen == [(1, False)]  # one worker: nothing to serialise, the worker opens it
    assert CliRunner().invoke(app, ["serve", "--workers", "2"]).exit_code == 0
    assert seen[1] == (2, True)
    monkeypatch.setenv("INTELROUTER_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable: the workers' call
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert CliRunner().invoke(app, ["serve", "--workers", "2"]).exit_code == 0
    assert [w for w, _ in seen] == [1, 2, 2]


def test_readme_walkthrough_import_capture_triage_export(settings: Settings, tmp_path: Path) -> None:
    assert "imported 23700 new" in run("data", "import", str(DATASETS / "clinc150" / "clinc150_full.csv"),
                                       "--split-col", "split").stdout
    conv = tmp_path / "conversations.jsonl"
    conv.write_text("\n".join(json.dumps({"text": f"play song {i}", "user_id": "u1", "predicted_label": "play_music",
                                          "confidence": 0.9, "provider": "teacher"}) for i in range(10)) + "\n")
    assert "imported 10 new queries" in run("capture", "import", str(conv)).stdout
    assert "10 auto-approved" in run("capture", "triage").stdout
    out = tmp_path / "export.jsonl"
    result = run("export", "--output", str(out), "--limit", "100")
    assert result.stdout.strip() == f"wrote 100 rows to {out}"
    assert len(out.read_text().splitlines()) == 100
    status = json.loads(run("status", "--json").stdout)
    assert status["ml_data"] == 23710 and status["queries"] == 10


@pytest.mark.parametrize(("args", "env", "message"), [
    (("export", "--output", "x.jsonl", "--since", "2026-02-30"), {}, "bad --since"),
    (("capture", "import", "missing.jsonl"), {}, "missing.jsonl: no such file"),
    (("data", "import", "x.txt"), {}, "no such file"),
    (("status",), {"INTELROUTER_MIN_SAMPLES": "many"}, "INTELROUTER_MIN_SAMPLES"),
    (("status",), {"INTELROUTER_TYPO": "1"}, "unknown setting INTELROUTER_TYPO"),
    (("status",), {"INTELROUTER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}, "unreachable"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(
    settings: Settings, tmp_path: Path, args: tuple, env: dict, message: str
) -> None:
    result = run(*args, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_readme_documents_every_setting_and_command() -> None:
    from intelrouter.config import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [f"INTELROUTER_{name.upper()}" for name in Settings.model_fields
               if f"`INTELROUTER_{name.upper()}`" not in readme]
    assert missing == []
    commands = {" ".join(path) for path in _commands(typer.main.get_command(app))}
    undocumented = [c for c in commands if f"intelrouter {c}" not in readme and not any(
        f"intelrouter {c} " in line for line in readme.splitlines())]
    assert undocumented == []


def test_usage_errors_exit_2_without_a_traceback() -> None:
    result = run("export")
    assert result.returncode == 2
    assert "Missing option '--output'" in result.stderr and "Traceback" not in result.stderr
