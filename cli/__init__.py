"""The Typer command line, installed as ``vae_anomaly.cli`` (see pyproject's package-dir)."""
