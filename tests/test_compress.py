"""--compress gzip|zstd: streamed into `<id>.ndjson.gz|.zst`, exact after decompression, and
recognised as archived by resume, `runs` and provenance."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
import zstandard

from harvester.archive import open_archive
from harvester.cli import main
from harvester.compression import (
    IDLE_ZSTD,
    SMALL_FILE,
    codec_of,
    compressing,
    open_data,
    published_data,
)
from harvester.config import load_settings
from harvester.errors import ConfigError
from harvester.job import harvest_job
from harvester.provenance import from_file
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import canonical, expected_records, parse_lines, settings_for


def unzstd(data: bytes) -> bytes:
    out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return out


DECOMPRESS = {"gzip": gzip.decompress, "zstd": unzstd}


@pytest.mark.parametrize(("codec", "ending"), [("gzip", ".ndjson.gz"), ("zstd", ".ndjson.zst")])
async def test_compressed_runs_hold_exactly_the_records(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, codec: str, ending: str
) -> None:
    settings = settings_for(simulator, tmp_path, compress=codec, compress_level=2)
    result = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
    assert not result.report.failed
    assert sorted(p.name for p in tmp_path.glob("*.ndjson*")) == [
        f"{run_id}{ending}" for run_id in sorted(cloud.runs)
    ]
    for run_id in cloud.runs:
        packed = (tmp_path / f"{run_id}{ending}").read_bytes()
        records = parse_lines(DECOMPRESS[codec](packed))  # read by the codec's own tool
        assert canonical(records) == canonical(expected_records(cloud, run_id))
        assert records[-1]["type"] == "summary"
        assert records[-1]["data"]["harvest"]["methods"] == ["default"]
    assert not list(tmp_path.glob(".*.partial"))
    # The archive reader (report) reads them too.
    runs = open_archive(tmp_path)
    assert [run.run_id for run in runs] == sorted(cloud.runs)
    assert len(list(runs[0].records("metric"))) == len(cloud.runs[runs[0].run_id].metrics())


async def test_resume_skips_compressed_runs_and_provenance_reads_them(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, compress="zstd")
    first, *rest = sorted(cloud.runs)
    await harvest_job(settings, [RunTarget(first)])
    (tmp_path / ".harvester-state.sqlite").unlink()  # the file alone says it is archived
    before = len(simulator.requests_for("metrics"))
    again = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
    assert again.skipped == [first]
    assert sorted(o.run_id for o in again.report.succeeded) == rest
    asked = {r.run_id for r in simulator.requests_for("metrics")[before:]}
    assert first not in asked
    path = published_data(tmp_path, first)
    assert path is not None and codec_of(path) == "zstd"
    how = from_file(path)
    assert how is not None and how["methods"] == ["default"]


async def test_force_with_another_compression_leaves_one_file_per_run(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(run_id)])
    forced = settings_for(simulator, tmp_path, compress="gzip", force=True)
    await harvest_job(forced, [RunTarget(run_id)])
    assert [p.name for p in tmp_path.glob(f"{run_id}.ndjson*")] == [f"{run_id}.ndjson.gz"]
    with open_data(tmp_path / f"{run_id}.ndjson.gz") as lines:
        records = parse_lines(b"".join(lines))
    assert canonical(records) == canonical(expected_records(cloud, run_id))


def test_the_cli_refuses_bad_compress_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1"]
    assert (
        main([*base, "--out", str(tmp_path), "--compress", "gzip", "--compress-level", "12"]) == 2
    )
    assert "out of range for gzip: use 1 to 9" in capsys.readouterr().err
    assert main([*base, "--out", "-", "--compress", "zstd"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --compress gzip"):
        load_settings({"out": str(tmp_path), "compress_level": 3}, environ={})


@pytest.mark.parametrize("level", [3, 19])
def test_zstd_frames_keep_a_small_window_at_every_level(tmp_path: Path, level: int) -> None:
    """Each open run file holds a compressor: a window of at most 512 KiB keeps it at
    about 2 MB (3.6 MB at level 3's own 2 MiB window), and any zstd reader reads it."""
    data = b"".join(
        b'{"type":"series","n":%d,"v":"%s"}\n' % (i, b"x" * (i % 97)) for i in range(40_000)
    )
    path = tmp_path / "1.ndjson.zst"
    with path.open("wb") as fh:
        stream = compressing(fh, "zstd", level)
        stream.write(data)
        stream.close()
    packed = path.read_bytes()
    frame = zstandard.get_frame_parameters(packed)
    assert frame.window_size <= 1 << 19 and frame.has_checksum
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed) == data
    with open_data(path) as lines:
        assert b"".join(lines) == data


def test_a_zstd_compressor_is_reused_for_the_next_file_and_makes_the_same_bytes() -> None:
    """A run file's compressor (~2 MB of tables) goes back to a pool when its stream ends
    whole; the next file's stream is the same as a new compressor's, byte for byte."""

    def packed(data: bytes) -> tuple[bytes, object]:
        out = io.BytesIO()
        stream = compressing(out, "zstd", 5)
        stream.write(data)
        used = stream._compressor  # type: ignore[attr-defined]
        stream.close()
        stream.close()  # a second close is a no-op (the compressor is not pooled twice)
        return out.getvalue(), used

    first = b"".join(b'{"n":%d,"v":"%s"}\n' % (i, b"y" * (i % 31)) for i in range(20_000))
    second = b"".join(b'{"m":%d}\n' % i for i in range(5_000))
    IDLE_ZSTD.clear()
    fresh, made = packed(second)
    assert IDLE_ZSTD[5] == [made]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed(first)[0]) == first
    again, reused = packed(second)
    assert reused is made and again == fresh
    # A stream left unended (a run aborted mid-write) keeps its compressor out of the pool.
    abandoned = compressing(io.BytesIO(), "zstd", 5)
    abandoned.write(first)
    assert IDLE_ZSTD[5] == []


def test_a_small_file_holds_its_bytes_not_a_compressor_and_is_compressed_whole_at_its_end() -> None:
    """A run's sidecar (`small`): up to SMALL_FILE bytes are kept and compressed whole at
    its close, so while it is open it holds no compressor (~2 MB each); past that it
    streams like any other file."""
    unpack = zstandard.ZstdDecompressor().decompressobj
    IDLE_ZSTD.clear()
    lines = b"".join(b'{"type":"metric","n":%d}\n' % i for i in range(2_000))
    out = io.BytesIO()
    stream = compressing(out, "zstd", 3, small=True)
    stream.write(lines)
    assert out.getvalue() == b"" and stream._compressor is None  # type: ignore[attr-defined]
    stream.close()
    frame = zstandard.get_frame_parameters(out.getvalue())
    assert frame.content_size == len(lines) and frame.has_checksum
    assert unpack().decompress(out.getvalue()) == lines
    assert len(IDLE_ZSTD[3]) == 1  # its compressor went back to the pool at once
    more = lines * (SMALL_FILE // len(lines))
    out = io.BytesIO()
    stream = compressing(out, "zstd", 3, small=True)
    stream.write(lines)
    stream.write(more)
    assert stream._compressor is not None  # type: ignore[attr-defined]
    stream.close()
    assert unpack().decompress(out.getvalue()) == lines + more
