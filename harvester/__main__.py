"""`python -m harvester` runs the CLI."""

from .cli import entrypoint

entrypoint()
