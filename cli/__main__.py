"""`python -m cli ...`: the `intelrouter` command (what MLproject runs)."""

from cli.main import main

main()
