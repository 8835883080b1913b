"""A part's bytes as the body of its request (`PartBody`), sent without a copy of them.

Given a file, aiohttp reads it in 64 KiB copies, a turn of the event loop each (~130 a
part); given `bytes`, botocore wraps them in a file, the same; given a `bytearray`,
aiohttp joins its first write to the request's headers (`b"".join`: the whole part
copied once more, into fresh pages), and uvloop copies what the socket did not take at
once, again and again. `PartBody` is an aiohttp payload of its own: a small first write,
which aiohttp joins to the headers, then the rest as a view of the part, which the
transport sends from as it is. The part is never written again once cut (`PartBuffer`):
the transport may hold the view until it is sent.
"""

from __future__ import annotations

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

#: The bytes of the first write, which aiohttp copies with the headers.
FIRST = 1 << 10


class PartBody(Payload):
    """`part` for aiohttp (a payload, used as it is) and for botocore, a file: `len` for
    its Content-Length, `seek` to rewind it for a retry, `read` for its type check
    (botocore reads none of it: the CRC32 is given and the payload is not signed, see
    `Store.open`)."""

    def __init__(self, part: bytes | bytearray) -> None:
        super().__init__(part)
        self._size = self._length = len(part)
        self._at = 0

    def __len__(self) -> int:
        return self._length

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body = memoryview(self._value)[:content_length]
        await writer.write(body[:FIRST])
        if body.nbytes > FIRST:
            await writer.write(body[FIRST:])

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    def read(self, size: int = -1) -> bytes:
        end = self._length if size < 0 else min(self._length, self._at + size)
        data, self._at = bytes(self._value[self._at : end]), end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = (
            offset if whence == 0 else self._length + offset if whence == 2 else self._at + offset
        )
        return self._at

    def tell(self) -> int:
        return self._at
