"""A v5 query answer holds every series of a metric: it is checked whole, then read and
handed to the writer series by series, in pieces (`series_answers.raw_result`,
`v5_series.series_chunks`), with the records exactly those of the answer parsed whole."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from harvester.backends import v5_series, v6_plan
from harvester.errors import MalformedAnswer, OutputError, TruncatedBody, UnusableAnswer
from harvester.job import harvest_job
from harvester.ratelimit import RateGate
from harvester.scheduler import RunTarget
from harvester.series_answers import raw_result
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.k6import import load_k6_run
from harvester.simulator.k6wide import write_k6_wide
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import read_dir, settings_for

RUN = 7
TAG_SETS = 150
STEP = 60


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wide") / "wide.json.gz"
    write_k6_wide(path, TAG_SETS, seconds=180)
    return path


@pytest.fixture
def cloud(recording: Path) -> SimCloud:
    cloud = generate_cloud(0)
    cloud.add_run(load_k6_run(recording, run_id=RUN, bucket_seconds=STEP))
    return cloud


def where() -> str:
    return "/cloud/v5/test_runs/7/query_range_k6(...)"


def answer(result: list[Any]) -> bytes:
    return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})


async def whole_answers(sim: Simulator, out: Path) -> dict[tuple[str, str], list[Any]]:
    """Each range query's `data.result`, parsed whole as before: (metric, method) -> entries."""
    settings = settings_for(sim, out, api="v6", stack_id=sim.stack_id, step=STEP)
    view = sim.state.v5_view(RUN)
    assert view is not None
    types = v6_plan.metric_types(view.metrics())
    labels = v6_plan.grouping(view.label_names())
    answers = {}
    async with Transport(settings, gate=RateGate.for_settings(settings),
                         stats=HarvestStats()) as transport:  # fmt: skip
        for name, method, path in v6_plan.series_queries(RUN, types, labels, (), STEP):
            doc = await transport.get("v5_query", transport.url(path))
            answers[(name, method)] = doc["data"]["result"]
    return answers


@pytest.mark.parametrize("spill_at", [v5_series.SPILL_AT, 1], ids=["in-memory", "spilled"])
async def test_a_wide_answer_goes_to_the_writer_in_pieces_and_the_records_are_unchanged(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_at: int
) -> None:
    monkeypatch.setattr(v5_series, "SERIES_CHUNK", 2000)  # a few series a piece
    monkeypatch.setattr(v5_series, "SPILL_AT", spill_at)
    pieces: list[int] = []
    lines = v5_series.series_lines
    spilled: list[int] = []
    write_series = v5_series.write_series

    def counted(*args: Any) -> Any:
        for data, count in lines(*args):
            pieces.append(count)
            yield data, count

    def noted(*args: Any) -> Any:
        spilled.append(1)
        return write_series(*args)

    monkeypatch.setattr(v5_series, "series_lines", counted)
    monkeypatch.setattr(v5_series, "write_series", noted)
    settings = settings_for(simulator, tmp_path, api="v6", stack_id=simulator.stack_id, step=STEP)
    result = await harvest_job(settings, [RunTarget(RUN)])
    assert not result.report.failed
    records = read_dir(tmp_path)[RUN]
    got: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in records:
        if r["type"] == "series":
            assert r["test_run_id"] == RUN and r["query"]["step"] == STEP
            got[(r["query"]["metric"], r["query"]["method"])].append(r["data"])
    expected = await whole_answers(simulator, tmp_path / "whole")
    assert dict(got) == expected
    http = expected[("http_req_duration", "histogram_avg")]
    assert len(http) >= TAG_SETS  # every tag set its own series (404s apart)
    assert len(pieces) > len(expected) and max(pieces) < len(http)
    summary = records[-1]["data"]
    assert summary["counts"]["series"] == sum(map(len, expected.values())) == sum(pieces)
    # Every range query read from its temporary file, or none (one spans ~40 KB).
    assert len(spilled) == (len(expected) if spill_at == 1 else 0)


async def test_long_answers_are_parsed_one_at_a_time_and_the_heap_trimmed_after_each(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing holds the GIL: answers that arrive together wait for the one parser
    (`PARSERS`) in their temporary files rather than each holding a thread's buffers,
    and the heap's free pages go back once each answer's pieces have gone on."""
    monkeypatch.setattr(v5_series, "SPILL_AT", 1)
    write_series = v5_series.write_series
    at_once, most, trims = [0], [0], []

    def slow(*args: Any) -> Any:
        at_once[0] += 1
        most[0] = max(most[0], at_once[0])
        try:
            time.sleep(0.05)  # long enough for the other answers to arrive meanwhile
            return write_series(*args)
        finally:
            at_once[0] -= 1

    monkeypatch.setattr(v5_series, "write_series", slow)
    monkeypatch.setattr(v5_series, "trim_heap", lambda: trims.append(1))
    settings = settings_for(simulator, tmp_path, api="v6", stack_id=simulator.stack_id,
                            step=STEP, concurrency=8)  # fmt: skip
    result = await harvest_job(settings, [RunTarget(RUN)])
    assert not result.report.failed
    queries = {(r["query"]["metric"], r["query"]["method"])
               for r in read_dir(tmp_path)[RUN] if r["type"] == "series"}  # fmt: skip
    assert len(queries) > 8 and most[0] == v5_series.PARSERS == 1
    assert len(trims) == len(queries)


def test_raw_result_keeps_each_entry_as_its_text_and_checks_the_whole_body() -> None:
    entries = [{"metric": {"name": "a"}, "values": [[1, 2.5]]}, {"metric": {}, "values": []}]
    body = answer(entries)
    raw = raw_result(body, 200, "v5_query", where)
    assert raw is not None and [orjson.loads(bytes(r)) for r in raw] == entries
    with pytest.raises(TruncatedBody):  # cut inside its last series: retried, none written
        raw_result(body[:-12], 200, "v5_query", where)
    with pytest.raises(UnusableAnswer, match="HTML"):
        raw_result(b"<html>login</html>", 200, "v5_query", where)
    bom = raw_result(b"\xef\xbb\xbf" + body, 200, "v5_query", where)
    assert bom is not None and [orjson.loads(bytes(r)) for r in bom] == entries
    assert raw_result(b'{"data": {"result": 5}}', 200, "v5_query", where) is None
    assert raw_result(b'{"status": "error"}', 200, "v5_query", where) is None


def test_series_chunks_write_each_entry_as_parsed_whole() -> None:
    entries = [{"metric": {"name": f"u{i}"}, "values": [[60 * i, i / 3]]} for i in range(500)]
    raw = raw_result(answer(entries), 200, "v5_query", where)
    assert raw is not None
    query = {"method": "increase", "metric": "http_reqs", "step": 60}
    chunks = list(v5_series.series_chunks(3, query, raw))
    assert len(chunks) == 1 and chunks[0][1] == 500
    lines = chunks[0][0].splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"type": "series", "test_run_id": 3, "query": query, "data": e} for e in entries
    ]


def test_a_series_that_is_json_but_not_utf8_fails_the_run_saying_so() -> None:
    """Naming the query and the byte (orjson's words were "str is not valid UTF-8:
    surrogates not allowed", of a Latin-1 byte, and no query)."""
    body = answer([{"metric": {"name": "ok"}}]).replace(b'"ok"', b'"\xff"')
    raw = raw_result(body, 200, "v5_query", where)  # whole JSON to a check of its shape
    assert raw is not None and isinstance(raw[0], msgspec.Raw)
    said = r"v5_query last of vus: a series that does not parse \(answer is not UTF-8 \(byte 0xff"
    with pytest.raises(UnusableAnswer, match=said):
        list(v5_series.series_chunks(3, {"method": "last", "metric": "vus"}, raw))


def spilled_lines(body: bytes) -> list[Any]:
    """What `v5_series.write_series` makes of `body` read from a file, parsed back."""
    with tempfile.TemporaryFile() as file:
        file.write(body)
        file.seek(0)
        out = v5_series.write_series(file, 3, {"metric": "m"}, where)
        return [orjson.loads(line) for data, _ in out.chunks() for line in data.splitlines()]


def test_an_answer_read_from_its_file_makes_the_lines_of_one_held_in_memory() -> None:
    entries = [{"metric": {"name": f"u{i}", "é": "ü"}, "values": [[60 * i, i / 3], [1, -0.0]]}
               for i in range(50)]  # fmt: skip
    body = answer(entries)
    raw = raw_result(body, 200, "v5_query", where)
    assert raw is not None
    whole = [orjson.loads(line) for data, _ in v5_series.series_chunks(3, {"metric": "m"}, raw)
             for line in data.splitlines()]  # fmt: skip
    assert spilled_lines(body) == whole == spilled_lines(b"\xef\xbb\xbf" + body)
    assert spilled_lines(answer([])) == []
    # Integers yajl cannot hold (int64's least, past int64, past 2**64) as orjson reads them.
    huge = answer([{"values": [[1, -(2**63)], [2, 2**64 - 1]]}, *entries])
    huge = huge.replace(b"18446744073709551615", b"123456789012345678901234567890")
    raw = raw_result(huge, 200, "v5_query", where)
    assert raw is not None
    whole = [orjson.loads(line) for data, _ in v5_series.series_chunks(3, {"metric": "m"}, raw)
             for line in data.splitlines()]  # fmt: skip
    assert (
        spilled_lines(huge) == whole and whole[0]["data"]["values"][1][1] == 1.2345678901234568e29
    )


@pytest.mark.parametrize(
    ("body", "error", "said"),
    [
        (answer([{"values": [[1, 2]]}])[:-3], TruncatedBody, "not whole JSON"),  # cut, retried
        (answer([{"values": [[1, 2]]}]) + b" x", TruncatedBody, "not whole JSON"),
        (answer([{"metric": {"name": "ok"}}]).replace(b'"ok"', b'"\xff"'), UnusableAnswer,
         "not UTF-8"),
        (b'{"status": "error", "data": {"result": 5}}', MalformedAnswer, "no 'data.result' list"),
    ],
)  # fmt: skip
def test_an_answer_read_from_its_file_fails_as_one_held_in_memory(
    body: bytes, error: type[Exception], said: str
) -> None:
    with pytest.raises(error, match=said):
        spilled_lines(body)


async def test_spilled_answers_cut_short_are_asked_again_and_written_once(
    cloud: SimCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half the range queries' bodies are cut short: each is read to a file, found cut,
    asked again; every series is written exactly once."""
    monkeypatch.setattr(v5_series, "SPILL_AT", 1)
    cut = FaultPlan(seed=3, p_truncate=0.5, fault_endpoints=frozenset({"v5_query"}))
    async with Simulator(cloud, faults=cut) as sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id, step=STEP,
                                max_attempts=20)  # fmt: skip
        result = await harvest_job(settings, [RunTarget(RUN)])
        expected = await whole_answers(sim, tmp_path / "whole")
    assert not result.report.failed and result.stats.retries > 0
    got: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in read_dir(tmp_path)[RUN]:
        if r["type"] == "series":
            got[(r["query"]["metric"], r["query"]["method"])].append(r["data"])
    assert dict(got) == expected


async def test_a_temporary_file_that_cannot_be_written_ends_the_job_in_one_line(
    simulator: Simulator, tiny_fs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TMPDIR full: what was an internal error (an OSError out of the fetch) is the
    job's `OutputError`, as a full output disk is, naming the directory."""
    monkeypatch.setattr(v5_series, "SPILL_AT", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_fs))
    with contextlib.suppress(OSError), (tiny_fs / "fill").open("wb") as filler:
        while True:
            filler.write(b"x" * 65536)
    settings = settings_for(simulator, tmp_path, api="v6", stack_id=simulator.stack_id, step=STEP)
    with pytest.raises(OutputError, match=f"temporary file in {tiny_fs}: No space left"):
        await harvest_job(settings, [RunTarget(RUN)])
    assert RUN not in read_dir(tmp_path)
