"""Which proxy a request goes through, and the user agent the harvester names itself by."""

from __future__ import annotations

import urllib.request

import aiohttp
from yarl import URL

from . import version


def user_agent() -> str:
    return f"k6-harvester/{version()} aiohttp/{aiohttp.__version__}"


def env_proxy(url: URL) -> str | None:
    """The proxy for `url` from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY, read as
    curl reads them (by the standard library). Not aiohttp's `trust_env`: that also sends
    ~/.netrc passwords, to every host (a storage host included), and refuses any request
    that carries our Authorization header when ~/.netrc has a `default` entry."""
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(url.scheme) or proxies.get("all")


class ProxyChoice:
    """`env_proxy`, read once an origin: the environment does not change during a job, and
    reading it (every variable, each request) was about a tenth of a request's CPU."""

    def __init__(self) -> None:
        self._chosen: dict[tuple[str, str | None, int | None], str | None] = {}

    def __call__(self, url: URL) -> str | None:
        origin = (url.scheme, url.host, url.port)
        if origin not in self._chosen:
            self._chosen[origin] = env_proxy(url)
        return self._chosen[origin]
