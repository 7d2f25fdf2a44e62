"""The `intelrouter` command line (see `cli.main`)."""
