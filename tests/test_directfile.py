"""A points file written past the page cache (`directfile`): every byte in its place,
hashed, none of its whole blocks left in the page cache, and a full disk or a
filesystem without direct I/O handled."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from harvester import directfile
from harvester.directfile import BLOCK, DirectFile
from tests.fs_helpers import tiny_tmpfs


def _pieces(seed: int, total: int) -> list[bytes]:
    """Pieces of every size a write stack hands on: tiny, a serie's lines, past a block."""
    rng = random.Random(seed)
    pieces, size = [], 0
    while size < total:
        n = rng.choice([1, 7, 4095, 4097, 60_000, BLOCK - 3, BLOCK + 5000])
        pieces.append(rng.randbytes(n))
        size += n
    return pieces


def _written(path: Path, pieces: list[bytes]) -> DirectFile:
    path.touch()
    out = DirectFile(str(path))
    for piece in pieces:
        assert out.write(memoryview(piece)) == len(piece)
    out.close()
    return out


def test_every_byte_is_written_in_order_and_hashed(tmp_path: Path) -> None:
    pieces = _pieces(1, 3 * BLOCK + 12_345)
    out = _written(tmp_path / "points", pieces)
    whole = b"".join(pieces)
    assert (tmp_path / "points").read_bytes() == whole
    assert out.sha.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_files_written_in_turns_each_hold_their_own_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / f"run{i}" for i in range(3)]
    for path in paths:
        path.touch()
    files = [DirectFile(str(path)) for path in paths]
    pieces = [_pieces(seed, 2 * BLOCK + seed) for seed in range(3)]
    for turn in range(max(map(len, pieces))):  # one piece of each file at a time
        for out, own in zip(files, pieces, strict=True):
            if turn < len(own):
                out.write(own[turn])
    for out in files:
        out.close()
    for path, out, own in zip(paths, files, pieces, strict=True):
        assert path.read_bytes() == b"".join(own)
        assert out.sha.hexdigest() == hashlib.sha256(b"".join(own)).hexdigest()


def test_no_block_enters_the_page_cache_not_even_the_last(tmp_path: Path) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    path = tmp_path / "points"
    path.touch()
    out = DirectFile(str(path))
    if not out.direct:
        out.close()
        pytest.skip("this filesystem takes no direct writes")
    data = os.urandom(4 * BLOCK + 12_345)  # the last block padded, then cut to length
    out.write(data)
    out.close()
    shown = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert int(shown) == 0  # written buffered, 16 MiB would be there until written back
    assert path.read_bytes() == data


def test_a_full_disk_is_an_error_of_a_write_or_the_close(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "tiny") as tiny:
        path = tiny / "points"
        path.touch()
        out = DirectFile(str(path))
        with pytest.raises(OSError) as failed:
            try:
                for _ in range(6):
                    out.write(os.urandom(BLOCK))
            finally:
                out.close()
        assert failed.value.errno == errno.ENOSPC
        assert out.closed


def test_a_filesystem_without_direct_io_gets_the_same_bytes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, *args: int) -> int:  # as a filesystem that refuses it
        if flags & directfile._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    pieces = _pieces(2, 2 * BLOCK + 99)
    path = tmp_path / "points"
    path.touch()
    out = DirectFile(str(path))
    assert not out.direct
    for piece in pieces:
        out.write(piece)
    out.close()
    assert path.read_bytes() == b"".join(pieces)
