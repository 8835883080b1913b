"""The S3 client's HTTP session: aiobotocore's, except that a redirect is not followed.

aiohttp follows redirects unless told not to, and aiobotocore does not tell it: a store,
or whatever answers at its address, that redirected a request to another host got it
sent there again, with its `X-Amz-Security-Token` (the credentials' session token) and
its body (a run's data). S3 itself asks for no such thing: a bucket in another region is
answered with a 301 or 307 naming its region (`x-amz-bucket-region`), which botocore
reads and signs for again itself. Any other 3xx fails the request in one line saying
where it pointed (botocore, left to it, asks the bucket's region by a HEAD that is
redirected in turn, and so on until Python's recursion limit).

A 2xx answer that is a web page (a captive portal or a proxy's login page answering for the
store) is not S3's either: botocore took one it could not parse as XML for a partial
answer of S3's, asked again until --max-attempts ran out and failed as "500" (~13 s), and
one that happened to be well-formed XML passed as an answer (an empty listing). Such an
answer fails the request at once, saying so (`web_page`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiobotocore.httpsession import AIOHTTPSession

from ..errors import ConfigError
from .failures import StoreError

#: What S3 says a bucket's region with, on a redirect botocore follows itself.
REGION = "x-amz-bucket-region"


def check_hook() -> None:
    """Refuse an aiobotocore whose session no longer has the hook `NoRedirectSession`
    overrides (`_get_session`, private; there from 2.15 to 3.x at least): the override
    would be silently skipped and redirects followed, credentials and data with them."""
    if not callable(vars(AIOHTTPSession).get("_get_session")):
        import aiobotocore

        raise ConfigError(
            f"aiobotocore {aiobotocore.__version__} is not one harvester can stop S3 "
            "redirects with (a redirect would carry the credentials elsewhere); "
            "install a version it supports: pip install 'aiobotocore>=2.15,<4'"
        )


#: How a web page starts (after blanks, in any case). Not its Content-Type: some stores
#: (moto) send `text/html` with their empty answers and XML alike.
PAGE_STARTS = (b"<!doctype html", b"<html")


async def web_page(request: Any, response: Any) -> StoreError | None:
    """The error of a 2xx answer that is a web page, not S3's (None if not). A HEAD's
    answer has no body to tell by, and GetObject's is an object's (any bytes)."""
    status = response.status_code
    if not 200 <= status < 300 or request.method == "HEAD" or request.stream_output:
        return None
    body = await response.content  # (read whole anyway, and kept: botocore parses it)
    if not body[:256].lstrip().lower().startswith(PAGE_STARTS):
        return None
    asked = urlsplit(request.url)
    kind = response.headers.get("content-type") or "no Content-Type"
    return StoreError(
        f"the S3 store at {asked.scheme}://{asked.netloc} answered {request.method} "
        f"{asked.path} with a web page (HTTP {status}, {kind}), not S3's XML: a proxy or a "
        "login page in the way? check --s3-endpoint-url and HTTPS_PROXY/NO_PROXY",
        "NotS3",
    )


class _NoRedirects:
    """An aiohttp `ClientSession` whose requests do not follow redirects."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.request(*args, allow_redirects=False, **kwargs)


class NoRedirectSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's session (`AioConfig(http_session_cls=...)`), redirects not followed."""

    async def _get_session(self, proxy_url: Any) -> Any:
        return _NoRedirects(await super()._get_session(proxy_url))

    async def send(self, request: Any) -> Any:
        response = await super().send(request)
        status = response.status_code
        failed = await web_page(request, response)
        if failed is not None:
            raise failed
        if 300 <= status < 400 and REGION not in response.headers:
            asked = urlsplit(request.url)
            there = urlsplit(response.headers.get("location", "")).netloc or "an unnamed place"
            raise StoreError(
                f"the S3 store at {asked.scheme}://{asked.netloc} redirected the request to "
                f"{there} (HTTP {status}): not followed, the request's credentials and data "
                "would go with it; give --s3-endpoint-url the store's own address",
                str(status),
            )
        return response
