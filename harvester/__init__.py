"""Async bulk data harvester for the k6 Cloud REST API."""

from functools import cache


@cache
def version() -> str:
    """This package's version, from its installed metadata, read on first use: importing
    importlib.metadata costs ~0.06 s, which every start would pay, the commands that
    never show the version included (`config show`, a cron job's `status`)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("k6-harvester")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    """`harvester.__version__`, as packages have it, read when asked (PEP 562)."""
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "version"]
