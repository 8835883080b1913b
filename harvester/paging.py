"""Reading the API's listings: a paged list (`page`, `page_size`, `meta.count`) to its end,
and one listing per item, a few at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NamedTuple, TypeVar

import anyio
import orjson

from .errors import ApiStatusError, unwrap

Item = TypeVar("Item")
JsonObject = dict[str, Any]


class Page(NamedTuple):
    """A page of a listing: its items, `meta.count` as `total` (None when the answer has
    none) and the request, for messages (`endpoint path?query`)."""

    items: list[JsonObject]
    total: int | None
    request: str


#: (page, page_size) -> that `Page`.
PageFetch = Callable[[int, int], Awaitable[Page]]


async def read_pages(
    fetch: PageFetch, page_size: int, *, whole_without_count: bool = False
) -> list[JsonObject]:
    """Every item of a paged listing. Stops when the pages read hold `meta.count` items,
    or (no count) a page comes back short, or a page is empty or brings nothing new (a
    server ignoring `page` must not loop us forever). With `whole_without_count`, an
    answer without a count is the whole list: the v3 lists are documented unpaged, so
    only an answer with a `meta` is followed page by page. A page the same as the one
    before but for its ids is an error (`PageShapes`)."""
    items: dict[Any, JsonObject] = {}
    shapes = PageShapes()
    page = 1
    while True:
        batch, count, request = await fetch(page, page_size)
        before = len(items)
        alike: Counter[bytes] = Counter()
        for item in batch:
            items[listing_key(item, alike)] = item
        if not batch or len(items) == before:
            break
        if count is not None and len(items) >= count:
            break
        if count is None and (whole_without_count or len(batch) < page_size):
            break
        shapes.check(batch, request, "page")
        page += 1
    return list(items.values())


class PageShapes:
    """Each page of a listing about to be followed, but for its rows' ids, against the
    page before: the same rows again with new ids is a server ignoring the paging
    parameter and making up ids (every page brought rows not seen before, so the listing
    was asked for ever). In a real listing two pages differ in more than their ids (a
    test's name, a run's `created`), so a legitimate long listing is never cut. Rows that
    hold nothing but their ids say nothing of that: such a page is not compared (every
    page of a listing of bare ids is the one before but for its ids)."""

    def __init__(self) -> None:
        self._before: list[bytes] | None = None

    def check(self, rows: list[JsonObject], request: str, parameter: str) -> None:
        shape = [orjson.dumps({k: v for k, v in row.items() if k != "id"},
                              option=orjson.OPT_SORT_KEYS) for row in rows]  # fmt: skip
        if all(row == b"{}" for row in shape):
            self._before = None
            return
        if shape == self._before:
            raise ApiStatusError(
                f"{request}: a page of {len(rows)} rows the same as the page before but for "
                f"their ids, and the listing goes on (does the API ignore {parameter}?)",
                url=request,
            )
        self._before = shape


def listing_key(item: JsonObject, alike: Counter[bytes]) -> Any:
    """A listed item's key for listing it once: its id, when one an item can have (an id
    that is a list or an object, unhashable, was an internal error: TypeError; such an
    item is then named as no run or test id), else its text and how many items of its
    page (`alike`) were the same before it: keyed by their place, items without an id were
    new on every page, and a server ignoring `page` or `$skip` was asked for ever."""
    item_id = item.get("id")
    if isinstance(item_id, int | str):
        return item_id
    text = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    alike[text] += 1
    return ("no id", text, alike[text])


async def each(func: Callable[[Item], Coroutine[Any, Any, None]], items: Iterable[Item]) -> None:
    """`func(item)` for every item at once (bound them with a limiter inside `func`); the
    first error, raised as itself rather than as an ExceptionGroup, ends them all."""
    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(func, item)
    except ExceptionGroup as group:
        raise unwrap(group) from None
