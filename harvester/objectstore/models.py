"""botocore's data loader made quicker and smaller for a job's clients, through the hooks
botocore gives it (the loader's `file_loader`, and `list_available_services`).

botocore reads its models with the standard `json` into `OrderedDict`s and keeps them
for the process's life: for one S3 client, the S3 model with its documentation, the
endpoint rules and every service's endpoints, ~12 MB of objects and ~60 ms at start.
orjson's plain dicts (ordered too) take ~6 MB and a fifth of the time, and the
documentation, which only docstrings read, is left out. Asked whether it knows a
service, the loader lists the directories of all ~400 (for each kind of model): here it
looks for the one asked for alone, so the credential chain's own clients (STS for a
role or web identity, SSO) are still found.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader

#: Where a service model's documentation is only for docstrings: the operations and the
#: shapes with their members (not `clientContextParams`, whose botocore reads).
_DOCUMENTED = ("operations", "shapes")
_DOCS = ("documentation", "documentationUrl")


class ModelFiles(JSONFileLoader):  # type: ignore[misc]
    """Model files read by orjson, a service model without its documentation."""

    def _load_file(self, full_path: str, open_method: Callable[..., Any]) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            data = orjson.loads(fp.read())
        if os.path.basename(full_path).startswith("service-2."):
            _undocument(data)
        return data


def _undocument(model: dict[str, Any]) -> None:
    model.pop("documentation", None)
    for part in _DOCUMENTED:
        for entry in model.get(part, {}).values():
            for item in (entry, *entry.get("members", {}).values()):
                for key in _DOCS:
                    item.pop(key, None)


class KnownServices:
    """What `Loader.list_available_services` answers: `in` looks for that one service's
    model; listing them all (botocore's message for an unknown one) walks them all."""

    def __init__(self, loader: Loader, type_name: str, list_all: Callable[[str], list[str]]):
        self._loader = loader
        self._type_name = type_name
        self._list_all = list_all

    def __contains__(self, name: object) -> bool:
        try:
            return isinstance(name, str) and bool(
                self._loader.list_api_versions(name, self._type_name)
            )
        except DataNotFoundError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._list_all(self._type_name))


def quicken(loader: Loader) -> None:
    """Make `loader` (a session's `data_loader`) read models as this module says."""
    loader.file_loader = ModelFiles()
    list_all = loader.list_available_services
    loader.list_available_services = lambda type_name: KnownServices(loader, type_name, list_all)
