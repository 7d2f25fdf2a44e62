"""The `intelrouter` command: thin commands over the library, flows and serving. Errors print one line, exit 1.

This package sits above `intelrouter/` (the library), `flows/` and `serving/`: it is the only place that imports
all three, so the library never imports upward.
"""

from __future__ import annotations

import sys

import typer

from cli import data, models, operations, simulate  # noqa: F401 - importing a command module registers its commands
from cli.app import app
from intelrouter.config import telemetry_off
from intelrouter.errors import IntelRouterError


def main() -> None:
    """Entry point: run the app, turning known errors into one line on stderr and exit code 1."""
    telemetry_off()
    try:
        app(standalone_mode=False)
    except IntelRouterError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, no traceback
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a usage error (typer vendors its own click)
            exc.show()
            sys.exit(exc.exit_code)
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

