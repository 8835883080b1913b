"""botocore made ready on a thread while a job starts (`start_early`), for its store.

Importing aiobotocore and botocore and making a session with the S3 models read take ~0.1 s
of CPU, all before the store's first request, itself before the API's first: a job to
`--out s3://` asked the API ~0.12 s later than one to a directory. Started on a thread as
the job opens its state (a new state file's fsyncs: ~30-60 ms of waiting) and discovers its
runs (the API's round trips), that work fills those waits instead of following them.
`botocore()` takes what the thread made, else does it there and then (and says why not:
an `ImportError` without the s3 extra).

Started only once the main thread has imported the job's modules: two threads importing
packages that import each other could otherwise meet in a deadlock, which importlib
breaks by failing one of the imports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .. import version


@dataclass(frozen=True)
class Botocore:
    """What a store's client is made of: a session whose loader reads models as `models`
    says, with S3's read already; the config class, the user agent (`Store.open`) and the
    handler `Store.open` takes out."""

    session: Any
    config: type[Any]
    user_agent: str
    expect_header: Callable[..., Any]


def load() -> Botocore:
    """Import botocore and make a session; raises `ImportError` without the s3 extra."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.handlers import add_expect_header

    from .models import quicken

    session = get_session()
    quicken(session.get_component("data_loader"))  # (`models`: quicker and smaller)
    # The models a client of S3 reads (aiobotocore's list, kept with its own code).
    session.warm_up_loader_caches("s3")
    # (our version is read from the installed metadata: ~5 ms of CPU the first time)
    # aiobotocore's session adds botocore's own part (`user_agent_extra`, botocore/V):
    # ours named it too, and requests said `botocore/V botocore/V`.
    agent = f"k6-harvester/{version()}"
    return Botocore(session, AioConfig, agent, add_expect_header)


#: The thread's work, started by `start_early`, not yet taken by `botocore()`.
_EARLY: list[Future[Botocore]] = []


def start_early() -> None:
    """Make botocore ready on a thread of its own, for the next `botocore()`."""
    if _EARLY:
        return
    future: Future[Botocore] = Future()

    def work() -> None:
        try:
            future.set_result(load())
        except BaseException as exc:  # said by `botocore()`, which tries again
            future.set_exception(exc)

    # Not a daemon: a job that ends before its store opens waits for the thread (<0.1 s)
    # rather than ending the interpreter while it imports.
    threading.Thread(target=work, name="botocore-early").start()
    _EARLY.append(future)


def botocore() -> Botocore:
    """The session made early (once: a session remembers its credentials, which a later
    store may not share), else one made now; raises `ImportError` without the s3 extra."""
    if _EARLY:
        try:
            return _EARLY.pop().result()
        except Exception:
            pass  # (made again here: an import error is then this thread's, as without)
    return load()
