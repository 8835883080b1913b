"""A run's write stack: its lines in, through the format, the compressor and the hash, to
its files (`--format`, `--compress`).

`DirectorySink` keeps one `RunFiles` per run in flight and calls it from a worker thread
(`anyio.to_thread`), one call at a time per run, so none of this runs on the event loop:
zlib, zstd, hashlib and the file writes release the GIL, and the fetchers keep going
meanwhile; for `--format points` and `parquet`, whose points hold the GIL to be built,
the stack runs in the writer process instead (`writeproc`). The stack writes into
file objects it is given (the sink's temporary files), which stay open for their owner
to fsync and publish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from .compression import HashingWriter, compressing
from .formats.parquet import ParquetPoints
from .formats.points import PointsSplitter, Serie
from .packed import PackedSeries, SeriesTexts

#: The files of a run in each --format, in the order they are published.
SUMMARY = b'{"type":"summary"'
KINDS = {
    "raw": ("ndjson",),
    "points": ("points.ndjson", "meta.ndjson"),
    "parquet": ("parquet", "meta.ndjson"),
}


def codec_for(kind: str, codec: str) -> str:
    """Parquet compresses its own pages (zstd): its file is not wrapped again."""
    return "none" if kind == "parquet" else codec


@dataclass
class _Stack:
    """One file's stack: what hashes its bytes, and where lines go (the hasher or a
    compressor in front of it, or the Parquet writer)."""

    hashing: HashingWriter
    stream: BinaryIO
    parquet: ParquetPoints | None = None


class RunFiles:
    """One run's files being written, in its `--format`: `write` its lines, then `finish`
    (ends compressed streams and Parquet's footer; the files stay open)."""

    def __init__(
        self,
        run_id: int,
        output_format: str,
        codec: str,
        level: int | None,
        files: Mapping[str, BinaryIO],
        hashing: Callable[[BinaryIO], HashingWriter] = HashingWriter,
    ) -> None:
        """`hashing`: what hashes and writes each file's bytes (`BehindWriter` in the child)."""
        lines = output_format == "points"  # its lines built by the splitter
        self.splitter = PointsSplitter(run_id, lines=lines) if output_format != "raw" else None
        self._stacks: dict[str, _Stack] = {}
        for kind, fh in files.items():
            hasher = hashing(fh)
            small = kind == "meta.ndjson"  # a run's records but its points: kept whole
            stream = compressing(cast(BinaryIO, hasher), codec_for(kind, codec), level, small=small)
            points = ParquetPoints(hasher) if kind == "parquet" else None
            self._stacks[kind] = _Stack(hasher, stream, points)

    def write(self, data: bytes | bytearray | PackedSeries | SeriesTexts) -> None:
        """`data`: lines, a bytearray (the writer process's reused buffer) not kept; or a
        batch of series packed for Parquet or for points (`packed`: each is sent only to
        its format)."""
        if isinstance(data, PackedSeries):
            parquet = self._stacks["parquet"].parquet
            assert parquet is not None and self.splitter is not None
            parquet.add_packed(data, self.splitter)
            return
        if isinstance(data, SeriesTexts):
            self._write_texts(data)
            return
        if self.splitter is None:
            self._stacks["ndjson"].stream.write(data)
            return
        meta = self._stacks["meta.ndjson"].stream
        parquet = self._stacks["parquet"].parquet if "parquet" in self._stacks else None
        if parquet is not None and parquet.add_lines(data, self.splitter):
            return  # an answer's v2 series, parsed whole (never a summary)
        points = self._stacks["points.ndjson"].stream if parquet is None else None
        for item in self.splitter.split(bytes(data)):  # (bytes: the same object)
            if isinstance(item, Serie):
                if parquet is not None:
                    parquet.add(item)
                elif points is not None:
                    for chunk in item.chunks():
                        points.write(chunk)
            else:
                meta.write(item)
        if parquet is not None and data.startswith(SUMMARY):
            # The summary is a run's last line: its last row group is written now, in the
            # writer's turn, rather than at commit (while runs wait to be published, each
            # would hold its rows: 457 MB at large).
            parquet.flush()

    def _write_texts(self, batch: SeriesTexts) -> None:
        """A batch of series as texts (points: the only format it is sent to)."""
        assert self.splitter is not None
        stream = self._stacks["points.ndjson"].stream
        for chunk in self.splitter.text_chunks(batch):
            stream.write(chunk)

    def finish(self) -> None:
        """The last row group and footer, the compressors' ends; each file's bytes are
        then all written and hashed."""
        for stack in self._stacks.values():
            if stack.parquet is not None:
                stack.parquet.close()
            stack.stream.close()

    def discard(self) -> None:
        """Drop what is buffered (the run is aborted); errors of a full disk are moot."""
        for stack in self._stacks.values():
            if stack.parquet is not None:
                stack.parquet.discard()
            try:
                stack.stream.close()
            except OSError:
                pass

    def written(self, kind: str) -> tuple[int, str]:
        """(bytes, sha256) of a file as written."""
        hashing = self._stacks[kind].hashing
        return hashing.size, hashing.sha.hexdigest()

    def counts(self, counts: Mapping[str, int]) -> dict[str, Counter[str]]:
        """Each file's records by type, from the writer's counts of the run's records."""
        points = self.splitter.points if self.splitter is not None else 0
        return file_counts(list(self._stacks), points, counts)


def file_counts(
    kinds: list[str], points: int, counts: Mapping[str, int]
) -> dict[str, Counter[str]]:
    """Each file's records by type: the writer's counts of the run's records, and the
    points the splitter made of its series."""
    if kinds == ["ndjson"]:
        return {"ndjson": Counter(counts)}
    meta = Counter({kind: n for kind, n in counts.items() if kind != "series"})
    made = Counter({"point": points})
    found: dict[str, Any] = {"points.ndjson": made, "parquet": made, "meta.ndjson": meta}
    return {kind: found[kind] for kind in kinds}
