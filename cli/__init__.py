"""The `voxtral` command (installed as the `voxtral_cli` package)."""
