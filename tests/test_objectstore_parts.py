"""A run's bytes on their way to the store (`objectstore.parts`): parts of exactly the
part size whatever the writes' sizes, each sent without a copy of its own."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import anyio
import orjson
import pytest
from aiohttp import web
from anyio import wait_all_tasks_blocked

from harvester.config import load_settings
from harvester.objectstore import ObjectSink
from harvester.objectstore.parts import PartBuffer, PartHashing
from harvester.objectstore.store import THREADED_CHECKSUM, Store, crc32_params
from harvester.records import Chunk, Lines
from harvester.scheduler import RunTarget, Scheduler
from harvester.stats import HarvestStats
from tests.harvest_helpers import NullSink, serve
from tests.s3_helpers import CREDENTIALS, S3Server, moto_server

pytest.importorskip("aiobotocore")
MIB = 1 << 20


def test_writes_are_cut_into_parts_of_exactly_the_part_size() -> None:
    buffer = PartBuffer(part_size=10)
    written = [bytes([65 + i]) * n for i, n in enumerate((4, 9, 25, 1))]  # 39 bytes
    for data in written:
        assert buffer.write(data) == len(data)
    parts = list(buffer.ready)
    rest = buffer.rest()
    assert [len(part) for part in parts] == [10, 10, 10]
    assert len(rest) == 9
    assert b"".join([*parts, rest]) == b"".join(written)


def test_a_write_that_fills_a_part_exactly_leaves_an_empty_rest() -> None:
    buffer = PartBuffer(part_size=8)
    buffer.write(memoryview(b"12345678"))
    assert list(buffer.ready) == [b"12345678"]
    assert not buffer.rest()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


def test_the_store_receives_parts_of_the_part_size_not_of_the_writes(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes of 3 MiB into 5 MiB parts: the parts are 5, 5 and the last 2 MiB (parts
    grown by whole writes were 6 and 6 MiB: the memory a part holds followed the writes)."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    s3.client().create_bucket(Bucket="parts")
    flags = {"out": "s3://parts/pre/", "s3_endpoint_url": s3.url, "token": "t"}
    chunk = b"x" * (3 * MIB - 1) + b"\n"
    sizes: list[int] = []

    async def go() -> None:
        async with ObjectSink(load_settings(flags), part_size=5 * MIB) as sink:
            await sink.begin(7)
            for _ in range(4):
                await sink.write(7, chunk)
            upload = sink._runs[7].objects.uploads["ndjson"]
            await upload.settle()
            listed = s3.client().list_parts(
                Bucket="parts", Key="pre/7.ndjson", UploadId=upload.upload_id
            )
            sizes.extend(part["Size"] for part in listed["Parts"])
            await sink.commit(7)

    anyio.run(go)
    assert sizes == [5 * MIB, 5 * MIB]
    # The upload named CRC32 as it was created and its completion gave each part's: as
    # S3 wants of parts that carry one (moto keeps the object's checksum then, else none).
    head = s3.client().head_object(Bucket="parts", Key="pre/7.ndjson", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in head
    objects = s3.objects("parts", "pre/7.")
    assert objects["pre/7.ndjson"] == chunk * 4
    # Each part hashed as it was sealed, in order, the last one at the commit: the
    # manifest's sha256 is the object's.
    (entry,) = orjson.loads(objects["pre/7.manifest.json"])["files"]
    assert entry["bytes"] == 4 * len(chunk)
    assert entry["sha256"] == hashlib.sha256(chunk * 4).hexdigest()


def test_a_run_stored_in_one_put_is_checked_by_the_store_against_the_manifest_s_sha256(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file below the part size goes in one PUT whose checksum is the file's sha256
    (the one the manifest records), not a CRC32 of a second pass."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    s3.client().create_bucket(Bucket="whole")
    flags = {"out": "s3://whole/pre/", "s3_endpoint_url": s3.url, "token": "t"}
    lines = b'{"type":"point"}\n' * 50_000  # 850 KB: sealed from a worker thread

    async def go() -> None:
        async with ObjectSink(load_settings(flags)) as sink:
            await sink.begin(4)
            await sink.write(4, lines)
            await sink.commit(4)

    anyio.run(go)
    (entry,) = orjson.loads(s3.objects("whole")["pre/4.manifest.json"])["files"]
    assert entry["sha256"] == hashlib.sha256(lines).hexdigest()
    head = s3.client().head_object(Bucket="whole", Key="pre/4.ndjson", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == entry["sha256"]


async def test_a_file_is_hashed_a_part_at_a_time_as_each_is_sealed_not_as_it_is_written() -> None:
    """The write stack's writes (on the event loop, for plain raw lines) only count and
    copy; the sha256 and each part's CRC32 are taken in one pass as the part is sealed."""
    buffer = PartBuffer(part_size=10)
    hashing = PartHashing(cast(BinaryIO, buffer))
    written = b"".join(bytes([65 + i]) * 7 for i in range(4))  # 28 bytes
    for piece in (written[:13], written[13:]):
        hashing.write(piece)
    assert hashing.size == 28 and hashing.sha is buffer.sha
    assert buffer.sha.digest() == hashlib.sha256().digest()  # nothing hashed yet
    parts = [*buffer.ready, buffer.rest()]
    crcs = [await buffer.seal(part) for part in parts]
    assert buffer.sha.hexdigest() == hashlib.sha256(written).hexdigest()
    assert crcs == [crc32_params(zlib.crc32(part)) for part in parts]


async def test_a_body_is_checksummed_once_with_crc32_and_not_hashed_into_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store checks each body's CRC32, ours (a large body's from a worker thread);
    a SHA-256 of it in the signature too was a second pass over every byte (botocore's
    default over http, even to loopback). A body goes without waiting for a 100 Continue."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    puts: list[tuple[dict[str, str], bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT":
            puts.append(({k.lower(): v for k, v in request.headers.items()}, body))
        return web.Response(headers={"ETag": '"0"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    small, large = b"line\n" * 1000, b"line\n" * (THREADED_CHECKSUM // 4)
    async with serve(app) as url:
        flags = {"out": "s3://plain/pre/", "s3_endpoint_url": url, "token": "t"}
        store = Store(load_settings(flags))
        await store.open()
        try:
            assert await store.put("pre/1.manifest.json", small, create_only=True)
            assert await store.put("pre/1.ndjson", bytearray(large), create_only=True)
        finally:
            await store.close()
    assert [body for _, body in puts] == [small, large]
    for headers, body in puts:
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert "expect" not in headers  # (a round trip more: see `Store.open`)
        crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        assert headers["x-amz-checksum-crc32"] == crc


class _WaitingSink(NullSink):
    """A sink whose writes wait until `go` is set, like one waiting on upload slots."""

    channel_size = 2

    def __init__(self) -> None:
        self.go = anyio.Event()

    async def write(self, run_id: int, data: Chunk) -> None:
        await self.go.wait()


class _TenBatches:
    sent = 0

    async def run_object(self, run_id: int) -> dict[str, Any]:
        return {}

    async def fetch(self, run_id: int, run: Any, send: Any) -> dict[str, Any]:
        for _ in range(10):
            await send.send(Lines(run_id, b"{}\n", Counter(metric=1)))
            self.sent += 1
        return {}


async def test_while_the_object_sink_s_write_waits_only_its_channel_size_of_lines_queue() -> None:
    """Each queued message is a batch of lines (4 MB for long series): a sink whose writes
    wait on the network caps how many queue, below the channel's 16."""
    assert ObjectSink.channel_size < 16
    settings = load_settings({"out": "o", "token": "t", "runs_in_flight": 1})
    sink, fetcher = _WaitingSink(), _TenBatches()
    scheduler = Scheduler(settings, fetcher, sink, HarvestStats())
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.harvest, [RunTarget(1)])
        await wait_all_tasks_blocked()
        assert fetcher.sent == 1 + sink.channel_size  # one in the writer's hands
        sink.go.set()
    assert fetcher.sent == 10


def test_a_run_begins_while_few_runs_are_held_or_more_runs_as_large_fit_the_budget(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run holds its bytes until its commit: when commits fall behind, the
    next run waits to begin (and the fetchers with it) rather than memory growing. Up to
    `runs_in_flight` + `finished_held` runs begin whatever they hold; more, up to
    `runs_in_flight` + `most_finished`, while that many runs as large as the largest
    committed fit in `held_bytes`. Every run held may be committing at once."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ObjectSink, "held_bytes", 1000)
    s3.client().create_bucket(Bucket="held")
    flags = {"out": "s3://held/pre/", "s3_endpoint_url": s3.url, "token": "t"}
    began: list[int] = []
    committed: list[int] = []

    async def begin(sink: ObjectSink, run_id: int) -> None:
        await sink.begin(run_id)
        began.append(run_id)

    async def go() -> None:
        settings = load_settings({**flags, "runs_in_flight": 2})
        async with ObjectSink(settings) as sink, anyio.create_task_group() as tg:
            fewest, most = 2 + sink.finished_held, 2 + sink.most_finished
            assert fewest < most == sink.commits_at_once
            assert most * 100 <= 1000 < most * 300
            await sink.leased()
            ids = iter(range(1, 100))

            async def begin_next(runs: int) -> None:
                for _ in range(runs):
                    tg.start_soon(begin, sink, next(ids))
                await wait_all_tasks_blocked()

            async def commit(data: bytes = b"") -> None:
                run_id = began[len(committed)]
                if data:
                    await sink.write(run_id, data)
                await sink.commit(run_id)
                committed.append(run_id)
                await wait_all_tasks_blocked()

            await begin_next(fewest + 1)
            assert began == list(range(1, fewest + 1))  # no run's size known yet
            await commit(b"x" * 99 + b"\n")  # runs of 100 bytes: `most` may be held
            await begin_next(most - fewest + 1)
            assert len(began) - len(committed) == most  # the last one waits
            await commit(b"y" * 299 + b"\n")  # runs of 300 bytes: only `fewest`
            while len(began) - len(committed) > fewest:
                waiting = len(began)
                await commit()
                assert len(began) == waiting
            await commit()
            assert len(began) - len(committed) == fewest  # the last one began
            await sink.close()

    anyio.run(go)
    stored = s3.runs("held")
    assert stored.pop("pre/1.ndjson") == b"x" * 99 + b"\n"
    assert stored.pop("pre/2.ndjson") == b"y" * 299 + b"\n"
    assert stored == {f"pre/{run_id}.ndjson": b"" for run_id in committed[2:]}
