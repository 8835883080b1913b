"""Series batches: as few requests as fit under the cap, measured as sent."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from harvester.batching import IDS_KEY, POINTS_PER_REQUEST, SeriesBatcher, series_query


def _ids(n: int) -> list[str]:
    return [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]


def test_query_encodes_ids_brackets_as_sent_on_the_wire() -> None:
    query = series_query(7, ["a", "b"], "p95")
    assert query == "test_run_id=7&ids%5B%5D=a&ids%5B%5D=b&method=p95"
    assert IDS_KEY == "ids%5B%5D"


def test_ids_are_quoted_as_quote_would_and_measured_as_quoted() -> None:
    # Hex ids skip `quote` (they are what it would return); any other goes through it.
    odd = ["a b", "é/x", "k6~id_1.2-3", "ÄÖ", "x&y=z"]
    query = series_query(1, ["beef01", *odd], None)
    assert query == "test_run_id=1&" + "&".join(
        f"{IDS_KEY}={quote(i, safe='')}" for i in ["beef01", *odd]
    )
    assert [SeriesBatcher.id_cost(i) for i in odd] == [
        len(f"&{IDS_KEY}={quote(i, safe='')}") for i in odd
    ]
    fixed = len(series_query(1, [], None))
    batcher = SeriesBatcher(fixed + sum(SeriesBatcher.id_cost(i) for i in odd[:3]))
    assert batcher.plan(odd, fixed) == [odd[:3], odd[3:]]  # "é/x" counts 9 bytes, not 3


def test_plan_packs_greedily_and_every_batch_fits_the_cap() -> None:
    ids = _ids(500)
    path = "/loadtests/v2/series?"
    fixed = len(path + series_query(123, [], None))
    batcher = SeriesBatcher(2000)
    batches = batcher.plan(ids, fixed)
    assert [i for batch in batches for i in batch] == ids
    for batch in batches:
        assert len(path + series_query(123, batch, None)) <= 2000
    # Greedy: every batch but the last would overflow with one more id.
    per_batch = (2000 - fixed) // SeriesBatcher.id_cost(ids[0])
    assert len(batches) == -(-500 // per_batch)


def test_learning_a_rejected_length_lowers_the_cap_to_the_halves_for_good() -> None:
    batcher = SeriesBatcher(8000)
    batcher.learn_too_long(4000, fixed_length=40)
    assert batcher.cap == 40 + 1980
    batcher.learn_too_long(6000, fixed_length=40)
    assert batcher.cap == 2020  # never raised again
    batcher.learn_too_long(41, fixed_length=40)
    assert batcher.cap == 41  # never below one id's worth


def test_once_series_lengths_are_known_a_batch_holds_no_more_points_than_the_bound() -> None:
    ids, fixed = _ids(500), 60
    batcher = SeriesBatcher(8000)
    assert batcher.max_ids is None and max(map(len, batcher.plan(ids, fixed))) > 100
    batcher.guess(POINTS_PER_REQUEST // 10)  # another run's series: 10 fit in an answer
    assert {len(b) for b in batcher.plan(ids, fixed)} == {10}
    batcher.learn_points(POINTS_PER_REQUEST // 4)  # this run's own answer wins
    batcher.guess(1)  # and no later guess overrides it
    assert batcher.max_ids == 4 and not batcher.fits(5, fixed + 100)
    batcher.learn_points(POINTS_PER_REQUEST * 3)  # one serie over the bound still goes
    assert {len(b) for b in batcher.plan(ids, fixed)} == {1}
