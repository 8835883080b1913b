"""`--out s3://BUCKET/PREFIX/`: each run's files as objects, visible only whole, never
replaced (see `sink`). The client is aiobotocore, loaded only when a store is opened."""

from .failures import StoreCut, StoreRefused
from .location import Location, default_state_path, is_s3, parse_location
from .sink import ObjectSink

__all__ = [
    "Location",
    "ObjectSink",
    "StoreCut",
    "StoreRefused",
    "default_state_path",
    "is_s3",
    "parse_location",
]
