"""Async bulk data harvester for the k6 Cloud REST API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("k6-harvester")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
