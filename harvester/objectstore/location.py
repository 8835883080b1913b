"""Where an object-store archive is: the bucket and prefix of `--out s3://BUCKET/PREFIX/`,
the endpoint to reach it, and the local state file named after them."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings, is_loopback, refuse_userinfo, shown_url, url_parts
from ..errors import ConfigError


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    def key(self, name: str) -> str:
        """The key of the archive's file `name` (`5.ndjson`, `5.manifest.json`)."""
        return f"{self.prefix}{name}"

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"


def is_s3(out: str) -> bool:
    return out.lower().startswith("s3://")


def parse_location(out: str) -> Location:
    parts = url_parts(out)
    if parts is None:
        raise ConfigError(f"--out {out!r} is not an s3:// URL; use s3://BUCKET/PREFIX/")
    if not parts.netloc:
        raise ConfigError(f"--out {out!r} names no bucket; use s3://BUCKET/PREFIX/")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Location(parts.netloc, prefix)


#: Longest state file name (less ".sqlite"): room for SQLite's "-wal" and the job's
#: ".spool-XXXXXXXX" beside it within a file system's 255 bytes.
NAME_MAX = 200


def default_state_path(out: str) -> Path:
    """$XDG_STATE_HOME/harvester/<bucket>-<prefix>.sqlite (its directory created): the
    state stays local, the objects are the truth."""
    loc = parse_location(out)
    base = Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"))
    plain = f"{loc.bucket}-{loc.prefix}".rstrip("/-")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", plain)
    digest = hashlib.sha256(f"{loc.bucket}/{loc.prefix}".encode()).hexdigest()[:16]
    if len(name) > NAME_MAX:  # a long prefix: the file system takes 255 bytes a name
        name = f"{name[: NAME_MAX - 17]}-{digest}"
    elif name != plain:  # s3://b/a/b/ and s3://b/a_b/ would share one state otherwise
        name = f"{name}-{digest[:8]}"
    path = base / "harvester" / f"{name}.sqlite"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path.parent} for the state: {exc.strerror}") from None
    return path


def endpoint_url(settings: Settings) -> str | None:
    """--s3-endpoint-url, else AWS_ENDPOINT_URL (botocore reads it too, but we check it)."""
    url = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    if url is None:
        return None
    parts = url_parts(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint {shown_url(url)!r} is not an http(s) URL")
    refuse_userinfo("S3 endpoint", url, "S3 credentials come from the AWS credential chain")
    if parts.scheme == "http" and not settings.allow_insecure and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to send S3 credentials in clear text to {parts.hostname}: use https, "
            "or pass --allow-insecure if you really mean it"
        )
    return url


def is_plain_http(endpoint: str | None) -> bool:
    """Whether `endpoint` is reached over plain http (no TLS: nothing to verify)."""
    return endpoint is not None and urlsplit(endpoint).scheme == "http"
