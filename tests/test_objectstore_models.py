"""`objectstore.models`: botocore's loader made quicker reads the same models, less their
documentation, and still knows every service it has (the credential chain's STS)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("aiobotocore")

from botocore.exceptions import UnknownServiceError
from botocore.loaders import create_loader

from harvester.objectstore.models import quicken


def _undocumented(value: Any) -> Any:
    """`value` without the keys `documentation` and `documentationUrl`, anywhere."""
    if isinstance(value, dict):
        return {k: _undocumented(v) for k, v in value.items()
                if k not in ("documentation", "documentationUrl")}  # fmt: skip
    if isinstance(value, list):
        return [_undocumented(v) for v in value]
    return value


def test_the_s3_model_is_botocore_s_own_without_its_documentation() -> None:
    quick = create_loader()
    quicken(quick)
    model = quick.load_service_model("s3", "service-2")
    full = create_loader().load_service_model("s3", "service-2")
    assert _undocumented(model) == _undocumented(full) and model != full
    assert "documentation" not in model["operations"]["PutObject"]
    assert "documentation" not in model["shapes"]["PutObjectRequest"]["members"]["Body"]
    assert model["clientContextParams"] == full["clientContextParams"]  # botocore reads it
    assert model["shapes"]["PutObjectRequest"]["members"]["IfNoneMatch"]["location"] == "header"
    endpoints = quick.load_data("endpoints")
    assert endpoints == create_loader().load_data("endpoints")  # (no documentation in it)


def test_every_service_is_known_and_an_unknown_one_refused_naming_them() -> None:
    loader = create_loader()
    quicken(loader)
    assert loader.load_service_model("sts", "service-2")["metadata"]["endpointPrefix"] == "sts"
    assert "sso" in loader.list_available_services("service-2")
    assert 3 not in loader.list_available_services("service-2")
    with pytest.raises(UnknownServiceError) as refused:
        loader.load_service_model("no-such-service", "service-2")
    assert "s3, " in str(refused.value) and "sts" in str(refused.value)
