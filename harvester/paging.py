"""Reading the API's listings: a paged list (`page`, `page_size`, `meta.count`) to its end,
and one listing per item, a few at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import anyio

from .api import JsonObject
from .errors import unwrap

Item = TypeVar("Item")

#: (page, page_size) -> (that page's items, `meta.count` or None when the answer has none).
PageFetch = Callable[[int, int], Awaitable[tuple[list[JsonObject], int | None]]]


async def read_pages(
    fetch: PageFetch, page_size: int, *, whole_without_count: bool = False
) -> list[JsonObject]:
    """Every item of a paged listing. Stops when the pages read hold `meta.count` items,
    or (no count) a page comes back short, or a page is empty or brings nothing new (a
    server ignoring `page` must not loop us forever). With `whole_without_count`, an
    answer without a count is the whole list: the v3 lists are documented unpaged, so
    only an answer with a `meta` is followed page by page."""
    items: dict[Any, JsonObject] = {}
    page = 1
    while True:
        batch, count = await fetch(page, page_size)
        before = len(items)
        for item in batch:
            items[item.get("id", (page, len(items)))] = item
        if not batch or len(items) == before:
            break
        if count is not None and len(items) >= count:
            break
        if count is None and (whole_without_count or len(batch) < page_size):
            break
        page += 1
    return list(items.values())


async def each(func: Callable[[Item], Coroutine[Any, Any, None]], items: Iterable[Item]) -> None:
    """`func(item)` for every item at once (bound them with a limiter inside `func`); the
    first error, raised as itself rather than as an ExceptionGroup, ends them all."""
    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(func, item)
    except ExceptionGroup as group:
        raise unwrap(group) from None
