"""`scan`: one streaming pass over an archive file (size, sha256, records by type), as
`harvester verify` and the manifests use it: the same answer however the chunks cut the
lines, and the first line that is not a record named by its number."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from pathlib import Path

import orjson
import pytest
import zstandard

from harvester import scan as scan_module
from harvester.scan import scan

LINES = [
    '{"type":"metric","test_run_id":1,"data":{"name":"café 😀","v":[1,2.5e3,null]}}'.encode(),
    b"",
    b'{"type":"series","test_run_id":1,"data":{"values":[{"timestamp":"t","value":1}]}}',
    b'{"test_run_id":1,"metric":"m","tags":{"k":"\\u00e9\\"x"},"time":"t","value":null}',
    b'{"type":"metric","test_run_id":1,"data":{}}',
    b'{"test_run_id":1,"metric":"m","tags":{},"time":"t","value":2}',
]
WANT = Counter({"metric": 2, "series": 1, "point": 2})


def write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("ending", ["", ".gz", ".zst"])
@pytest.mark.parametrize("kind", ["ndjson", "points.ndjson"])
def test_records_are_counted_the_same_however_the_chunks_cut_the_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, ending: str, kind: str
) -> None:
    """Typed records and points mixed, in a raw or a points file (whose lines are read as
    points first)."""
    monkeypatch.setattr(scan_module, "CHUNK", chunk)
    data = b"\n".join(LINES)  # the last line without its newline
    path = write(tmp_path / f"1.{kind}{ending}", data)
    found = scan(path, ndjson=True)
    assert found.problem is None and all(is_record(line) for line in LINES if line)
    assert found.counts == WANT
    assert found.bytes == path.stat().st_size
    assert found.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def is_record(line: bytes) -> bool:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(record, dict):
        return False
    return isinstance(record.get("type"), str) or ("time" in record and "value" in record)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"type":"metric","data":{"name":"x"}',  # cut short
        b'{"type":"metric","data":{"name":"x",}}',  # not JSON
        b'{"type":"metric","data":{"name":"\xff"}}',  # not UTF-8, inside a skipped string
        b'{"type":"metric","data":{"name":"\\ud800"}}',  # a lone surrogate
        b'{"type":"metric","data":{"name":"a\x01b"}}',  # a control byte in a string
        b'[{"type":"metric"}]',  # not an object
        b'{"test_run_id":1,"data":{}}',  # no type, not a point
        b'{"test_run_id":1,"time":"t"}',  # a point without its value
        b'{"type":5}',  # a type that is not text
    ],
)
@pytest.mark.parametrize("chunk", [7, 1 << 20])
@pytest.mark.parametrize("kind", ["ndjson", "points.ndjson"])
def test_the_first_line_that_is_not_a_record_is_named_by_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: bytes, chunk: int, kind: str
) -> None:
    monkeypatch.setattr(scan_module, "CHUNK", chunk)
    assert not is_record(bad)  # orjson refuses it too
    lines = [*LINES, bad, *LINES]
    path = write(tmp_path / f"1.{kind}.zst", b"\n".join(lines) + b"\n")
    found = scan(path, ndjson=True)
    assert found.problem == f"line {len(LINES) + 1} is not a harvester record"
    assert found.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


class Nuls:
    """A stream of NULs, `chunks` reads long, counting the reads."""

    def __init__(self, chunks: int) -> None:
        self.chunks, self.reads = chunks, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return bytes(64) if self.reads <= self.chunks else b""


def test_a_file_of_nuls_is_no_record_from_its_first_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of NULs (what some filesystems leave, at the same size, after a crash) is
    one endless line: it was gathered whole, copied again at every chunk (verify of a
    300 MB one: 39 s and 640 MB of memory); no record starts so, and it is refused at
    its first chunk, while its bytes are still all hashed."""
    stream = Nuls(chunks=1000)
    with pytest.raises(scan_module.NotRecords) as refused:
        scan_module.count_records(stream, Counter())  # type: ignore[arg-type]
    assert refused.value.offset == 0 and stream.reads == 1
    monkeypatch.setattr(scan_module, "CHUNK", 64)
    path = write(tmp_path / "1.ndjson", bytes(64 * 1000))
    found = scan(path, ndjson=True)
    assert found.problem == "line 1 is not a harvester record"
    assert (found.bytes, found.sha256) == (64000, hashlib.sha256(bytes(64000)).hexdigest())


@pytest.mark.parametrize("chunk", [7, 64])
def test_a_line_longer_than_many_chunks_is_one_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Its pieces are joined once it ends (they are no longer copied at every chunk)."""
    monkeypatch.setattr(scan_module, "CHUNK", chunk)
    long = b'{"type":"series","data":{"values":[' + b"1," * 500 + b"2]}}"
    path = write(tmp_path / "1.ndjson", b"\n".join([LINES[0], long, LINES[2], long]) + b"\n")
    found = scan(path, ndjson=True)
    assert found.problem is None and found.counts == Counter({"metric": 1, "series": 3})
