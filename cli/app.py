"""The `intelrouter` command's shared ground: the Typer apps, the settings, one-line output, shared options."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from intelrouter.config import Settings
from intelrouter.errors import InputError

app = typer.Typer(help="IntelRouter: route queries, and keep the router improving from production traffic.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
capture_app = typer.Typer(help="Captured queries: import past conversations, triage.", no_args_is_help=True)
data_app = typer.Typer(help="Ground-truth labels in ml_data.", no_args_is_help=True)
review_app = typer.Typer(help="Human review in Label Studio: set up the project, push queries, pull answers.",
                         no_args_is_help=True)
flow_app = typer.Typer(help="Prefect flows: run one now (ephemeral Prefect unless PREFECT_API_URL is set).",
                       no_args_is_help=True)
canary_app = typer.Typer(help="The @staging canary: compare it with @production and act.", no_args_is_help=True)
for sub, name in ((db_app, "db"), (capture_app, "capture"), (data_app, "data"), (review_app, "review"),
                  (flow_app, "flow"), (canary_app, "canary")):
    app.add_typer(sub, name=name)

LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many tasks/answers.")]
ProjectOpt = Annotated[
    int | None, typer.Option("--project-id", help="Label Studio project (default INTELROUTER_LABEL_STUDIO_PROJECT_ID).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def get_settings() -> Settings:
    """The validated settings; a bad one is one error line (ConfigError)."""
    from intelrouter.config import load_settings

    return load_settings()


def echo(message: str) -> None:
    """Print one line to stdout."""
    typer.echo(message)


def echo_json(payload: Any) -> None:
    """Print a JSON document to stdout."""
    typer.echo(json.dumps(payload, indent=2, default=str))


def features_option(text: str) -> dict[str, Any]:
    """The --features option's JSON object; anything else is an InputError naming the option."""
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise InputError(f"bad --features: not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise InputError("bad --features: give a JSON object, e.g. '{\"min_df\": 1}'")
    return params
