"""Command modules of the CLI, one per capability; each registers on ``pipeline.cli.main``."""
