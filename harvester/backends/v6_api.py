"""The v6 and v5 endpoints the harvester uses, over one `Transport`: the run object,
OData listings paged to their end, the v5 metrics, labels and query results (a v5 404 is
a URL the harvester built wrong, never retried), and the stack id from `--stack-url`.
When a run is ready to harvest (`readiness`) is v6's word too: `status`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec

from ..answers import Parser, Spill, objects_only, parse_body, the_run_asked
from ..config import Settings
from ..errors import ApiStatusError, AuthRejected, HarvesterError, MalformedAnswer, NotFound
from ..paging import PageShapes, listing_key
from ..series_answers import raw_result, result_list
from ..transport import Transport
from ..wire import short_url
from . import v5_query

JsonObject = dict[str, Any]
V6 = "/cloud/v6"
MAX_TOP = 1000
NO_RESULT = "unexpected answer: no 'data.result' list"


def _needs(has: Callable[[Any], bool], what: str, parse: Parser = parse_body) -> Parser:
    """`parse`, then a 2xx answer without `what` is a glitch of the server, asked again
    (`MalformedAnswer`), as v2's `lists=` answers are: a `{}` failed the run at once."""

    def parsed(body: bytes, status: int, endpoint: str, where: Callable[[], str]) -> Any:
        doc = parse(body, status, endpoint, where)
        if not has(doc):
            url = where()
            raise MalformedAnswer(f"{endpoint} {url}: unexpected answer: {what}", url=url)
        return doc

    return parsed


def _keyed(key: str, kind: type) -> Callable[[Any], bool]:
    return lambda doc: isinstance(doc, dict) and isinstance(doc.get(key), kind)


_RUN = _needs(
    lambda doc: isinstance(doc, dict) and type(doc.get("id")) is int, "no test run object"
)
_LABELS = _needs(_keyed("data", list), "no labels 'data' list")
_RESULT = _needs(lambda doc: result_list(doc) is not None, NO_RESULT)


def _results(body: bytes, status: int, endpoint: str, where: Callable[[], str]) -> Any:
    """An aggregate's answer (`_RESULT`) whose entries are objects: one that is not fails
    the run in one line, as a v2 list item does (its label lookup was an internal error
    that ended the job)."""
    doc = _RESULT(body, status, endpoint, where)
    objects_only(result_list(doc) or [], "data.result", endpoint, where)
    return doc


_RAW_RESULT = _needs(lambda doc: doc is not None, NO_RESULT, raw_result)


def _within_count(count: Any, rows: int, request: str) -> None:
    """A page that links on must leave rows to read: `rows` already at the listing's
    `@count` is a server ignoring `$skip` (None: a server that gives no count)."""
    if type(count) is int and rows >= count:
        raise ApiStatusError(
            f"{request}: a page that links to another, though the {rows} rows read make "
            f"the listing's @count of {count} (does the API ignore $skip?)",
            url=request,
        )


class NotReady(HarvesterError):
    """A run asked for by id that is not final yet: not harvested (exit 1)."""


def readiness(run: JsonObject) -> tuple[bool, str | None]:
    """(harvest it now, the incomplete reason): completed runs are complete, aborted runs
    are harvested incomplete with the reason v6 gives, any other status waits."""
    status = run.get("status")
    if status == "completed":
        return True, None
    if status == "aborted":
        details = run.get("status_details") or {}
        extra = details.get("extra") if isinstance(details, dict) else None
        said = extra.get("message") if isinstance(extra, dict) else None
        return True, f"the test run was aborted ({said or 'no reason given'})"
    return False, f"not finished: status {status}"


class V6Api:
    """The v6 and v5 endpoints the harvester uses, over one `Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def get_run(self, run_id: int) -> JsonObject:
        url = self.transport.url(f"{V6}/test_runs/{run_id}")
        doc: JsonObject = await self.transport.get("v6_run", url, parse=_RUN)
        the_run_asked(doc, run_id, "v6_run", lambda: short_url(url))
        return doc

    async def pages(
        self, endpoint: str, path: str, params: dict[str, str], top: int
    ) -> list[JsonObject]:
        """Every row of a listing, once each (by `id`: pages that overlap, a row added
        meanwhile, must not list a run twice): `$skip` advances by the rows received,
        until `@nextLink` is absent. A page that links on though it brings no row not
        seen before (a server ignoring `$skip`), though the rows received already make
        the listing's own `@count` (asked of every page: rows added meanwhile count in
        it), or though it is the page before but for its ids (`PageShapes`: a server
        ignoring `$skip` and making up ids) is an error; each was asked on for ever."""
        rows: dict[Any, JsonObject] = {}
        shapes = PageShapes()
        received = 0
        while True:
            query = urlencode(
                {**params, "$top": top, "$skip": received, "$count": "true"}, safe="$:"
            )
            url = self.transport.url(path, query)
            # Rows must be objects (`lists`): one that is not fails the job in one line,
            # as v2's listings do (it was an internal error: AttributeError).
            doc = await self.transport.get(endpoint, url, lists=("value",))
            value: list[JsonObject] = doc["value"]
            before, received = len(rows), received + len(value)
            alike: Counter[bytes] = Counter()  # rows without an id alike on one page
            for row in value:
                rows.setdefault(listing_key(row, alike), row)
            if not doc.get("@nextLink"):
                return list(rows.values())
            request = f"{endpoint} {short_url(url)}"
            if len(rows) == before:
                raise ApiStatusError(
                    f"{request}: a page of {len(value)} rows that brings no row not on the "
                    "pages before but links to another (does the API ignore $skip?)",
                    url=request,
                )
            _within_count(doc.get("@count"), len(rows), request)
            shapes.check(value, request, "$skip")

    async def count(self, endpoint: str, path: str) -> int | None:
        """A listing's `@count`, from a page of one row (None when the answer has none)."""
        doc = await self.transport.get(endpoint, self.transport.url(path, "$top=1&$count=true"))
        count = doc.get("@count") if isinstance(doc, dict) else None
        return count if isinstance(count, int) else None

    async def _v5(
        self,
        endpoint: str,
        path: str,
        parse: Parser = parse_body,
        spill: Spill | None = None,
        lists: tuple[str, ...] = (),
    ) -> Any:
        url = self.transport.url(path)
        try:
            return await self.transport.get(endpoint, url, lists, parse=parse, spill=spill)
        except NotFound as exc:
            raise ApiStatusError(
                f"{exc} (v5 answers 404 only for a URL it cannot parse: a harvester bug, "
                "please report it)",
                status=404,
                url=exc.url,
            ) from exc

    async def metrics(self, run_id: int) -> list[JsonObject]:
        doc = await self._v5("v5_metrics", f"{v5_query.V5}/{run_id}/metrics", lists=("value",))
        value: list[JsonObject] = doc["value"]
        return value

    async def labels(self, run_id: int) -> list[str]:
        doc = await self._v5("v5_labels", f"{v5_query.V5}/{run_id}/labels", _LABELS)
        return [str(label) for label in doc["data"]]

    async def result(self, endpoint: str, path: str) -> list[JsonObject]:
        result = result_list(await self._v5(endpoint, path, _results))
        assert result is not None  # _RESULT asked again for an answer without it
        return result

    async def raw_result(self, endpoint: str, path: str, spill: Spill) -> list[msgspec.Raw] | Any:
        """`result`'s entries each as its JSON text, none parsed yet (`series_answers.raw_result`),
        or what `spill.read` made of a longer answer (`v5_series`): a range query's answer
        holds every series of a metric."""
        return await self._v5(endpoint, path, _RAW_RESULT, spill)


#: Stack ids `--stack-url`s resolved to, by (API base URL, stack URL): asked once per
#: process, not per transport (a CLI job's discovery and harvest, a worker's cycles).
_RESOLVED: dict[tuple[str, str], int] = {}


async def resolve_stack(transport: Transport, settings: Settings) -> None:
    """With `--stack-url` and no stack id: ask `GET /cloud/v6/auth` once for the id."""
    if transport.stack_id is not None or not settings.stack_url:
        return
    key = (settings.base_url, settings.stack_url)
    if key in _RESOLVED:
        transport.stack_id = _RESOLVED[key]
        return
    url = transport.url(f"{V6}/auth")
    # The stack is its origin: a URL pasted from the web app (…/a/k6-app/runs/N) is too.
    parts = urlsplit(settings.stack_url)
    stack_url = f"{parts.scheme}://{parts.netloc}"
    try:
        doc = await transport.get("v6_auth", url, headers={"X-Stack-Url": stack_url})
    except AuthRejected as exc:  # the transport's words name the stack id, not known yet
        raise AuthRejected(
            f"v6_auth {exc.url}: the API refused --stack-url {stack_url} (HTTP {exc.status}): "
            "the token has no "
            "stack at that URL; check the URL (https://NAME.grafana.net) and the token, or "
            "give --stack-id N",
            status=exc.status,
            url=exc.url,
        ) from None
    stack = doc.get("stack_id") if isinstance(doc, dict) else None
    if not isinstance(stack, int):
        shown = short_url(url)
        raise ApiStatusError(
            f"v6_auth {shown}: no stack id for {settings.stack_url} in the answer", url=shown
        )
    transport.stack_id = _RESOLVED[key] = stack
