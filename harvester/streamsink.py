"""All runs on one binary stream (stdout), each line whole; `--format singer` rewrites
the lines on their way. The other place lines go, a directory, is `sinks.DirectorySink`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO, Protocol

import anyio

from .records import Chunk
from .sinks import writing_to


class StreamEncoder(Protocol):
    """What turns a run's lines into another stream format (`formats.singer`): whole
    lines in, whole lines out, and lines of its own at a run's start and end."""

    def begin(self, run_id: int) -> bytes: ...
    def feed(self, run_id: int, data: bytes) -> bytes: ...
    def commit(self, run_id: int) -> bytes: ...
    def abort(self, run_id: int) -> bytes: ...
    def close(self) -> bytes: ...


class StreamSink:
    """All runs on one binary stream (stdout); lines of runs interleave, each line whole.

    Writes happen in a worker thread so a slow pipe slows the writer task (and, through
    the bounded channel, the fetchers) without freezing the event loop. An `encoder`
    rewrites the lines on their way (--format singer).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        buffer_size: int = 256 * 1024,
        encoder: StreamEncoder | None = None,
    ) -> None:
        self._stream = stream
        self._encoder = encoder
        self._buffer = bytearray()
        self._buffer_size = buffer_size
        # Flushes may overlap (the writer's and the publisher's); one at a time keeps
        # chunks in order, so a run's summary line stays its last.
        self._flushing = anyio.Lock()

    async def begin(self, run_id: int) -> None:
        if self._encoder is not None:
            self._buffer += self._encoder.begin(run_id)

    async def write(self, run_id: int, data: Chunk) -> None:
        assert isinstance(data, bytes)  # (series are packed only for Parquet, in files)
        self._buffer += data if self._encoder is None else self._encoder.feed(run_id, data)
        if len(self._buffer) >= self._buffer_size:
            await self._flush()

    async def _flush(self) -> None:
        async with self._flushing:
            if self._buffer:
                chunk, self._buffer = bytes(self._buffer), bytearray()
                with writing_to("stdout"):
                    await anyio.to_thread.run_sync(self._write_through, chunk)

    def _write_through(self, chunk: bytes) -> None:
        self._stream.write(chunk)
        self._stream.flush()

    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        if self._encoder is not None:
            self._buffer += self._encoder.commit(run_id)
        await self._flush()
        return None

    async def abort(self, run_id: int) -> None:
        if self._encoder is not None:
            self._buffer += self._encoder.abort(run_id)
        await self._flush()

    async def close(self) -> None:
        if self._encoder is not None:
            self._buffer += self._encoder.close()
        with anyio.CancelScope(shield=True):
            await self._flush()
