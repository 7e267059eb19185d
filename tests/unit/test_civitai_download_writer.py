"""The `.part` writer of model downloads: whatever the pieces, the bytes a resume keeps and the write mode, the
part ends up holding the kept bytes then every byte given; and the mount table lookup that picks the mode."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peropix_tui.civitai.download import BLOCK, DIRECT_ALIGN, PartWriter, direct_io_suits, filesystem_type


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


KEPT = st.integers(0, 3 * DIRECT_ALIGN + 17) | st.sampled_from([DIRECT_ALIGN, BLOCK - 1, BLOCK, BLOCK + 5])
# A piece is given with `write` (step None) or received into the buffer `step` bytes at most per read.
STEPS = st.none() | st.integers(1, BLOCK + 1) | st.sampled_from([16 << 10, BLOCK])
PIECES = st.lists(st.tuples(st.integers(1, BLOCK + DIRECT_ALIGN + 1), STEPS), max_size=4)


class Source:
    """A body to receive: `readinto` of an in-memory stream, remembering how much room each call was given."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.rooms: list[int] = []

    def readinto(self, view: memoryview) -> int:
        self.rooms.append(len(view))
        return self.stream.readinto(view)


@settings(max_examples=60, deadline=None)
@given(kept=KEPT, pieces=PIECES, direct=st.booleans(), finish=st.sampled_from(["close", "abandon"]))
def test_the_part_holds_the_kept_bytes_then_every_byte_given(
    kept: int, pieces: list[tuple[int, int | None]], direct: bool, finish: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "style.safetensors.part"
        old = pattern(kept, 1)
        part.write_bytes(old or b"stale bytes of an abandoned earlier download")
        new = [pattern(size, n + 2) for n, (size, _) in enumerate(pieces)]
        received = hashlib.sha256()
        writer = PartWriter(part, kept, direct=direct)
        for piece, (_, step) in zip(new, pieces, strict=True):
            if step is None:
                writer.write(piece)
                continue
            source = Source(piece)
            while writer.receive(source.readinto, step, received.update):
                pass
            assert max(source.rooms) <= step and source.rooms[-1] > 0  # the end of a body is a read of 0
        assert writer.size == kept + sum(size for size, _ in pieces)
        writer.close() if finish == "close" else writer.abandon()
        assert part.read_bytes() == old + b"".join(new)
        given_by_receive = b"".join(piece for piece, (_, step) in zip(new, pieces, strict=True) if step is not None)
        assert received.digest() == hashlib.sha256(given_by_receive).digest()  # each received byte, hashed once


def test_receiving_fills_whole_blocks_from_where_the_part_ends(tmp_path: Path) -> None:
    part = tmp_path / "style.safetensors.part"
    old = pattern(DIRECT_ALIGN + 10, 1)
    part.write_bytes(old)
    writer = PartWriter(part, len(old), direct=True)
    source = Source(pattern(3 * BLOCK, 2))
    while writer.receive(source.readinto, BLOCK, lambda _view: None):
        pass
    # The carried unit sits at the start of the buffer: the first read gets the rest of that block.
    carried = len(old) % DIRECT_ALIGN if writer.direct else 0
    assert source.rooms[:2] == [BLOCK - carried, BLOCK]
    writer.close()
    assert part.read_bytes() == old + pattern(3 * BLOCK, 2)


def test_a_read_that_fails_keeps_what_came_before_it(tmp_path: Path) -> None:
    part = tmp_path / "style.safetensors.part"
    writer = PartWriter(part, 0, direct=True)
    kept: list[memoryview] = []

    def breaks(view: memoryview) -> int:
        view[:5000] = pattern(5000, 3)
        kept.append(view[:10])  # like a failing reader whose traceback still holds a view of the buffer
        raise ConnectionResetError("reset by peer")

    source = Source(pattern(BLOCK + 300, 4))
    writer.receive(source.readinto, BLOCK, lambda _view: None)
    writer.receive(source.readinto, BLOCK, lambda _view: None)
    with pytest.raises(ConnectionResetError):
        writer.receive(breaks, BLOCK, lambda _view: None)
    writer.abandon()  # must close the file even while a view of the buffer is alive
    assert part.read_bytes() == pattern(BLOCK + 300, 4)
    assert len(kept) == 1


def test_an_unaligned_resume_keeps_writing_whole_blocks_directly(tmp_path: Path) -> None:
    part = tmp_path / "style.safetensors.part"
    old = pattern(DIRECT_ALIGN + 904, 1)
    part.write_bytes(old)
    writer = PartWriter(part, len(old), direct=True)
    if not writer.direct:
        writer.abandon()
        pytest.skip("this filesystem or system has no O_DIRECT")
    new = pattern(2 * BLOCK + 3, 2)
    writer.write(new)
    assert writer.direct  # the carried partial unit made every block start on an aligned offset
    writer.close()
    assert part.read_bytes() == old + new


def test_a_refused_direct_write_goes_through_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "style.safetensors.part"
    writer = PartWriter(part, 0, direct=True)
    if not writer.direct:
        writer.abandon()
        pytest.skip("this filesystem or system has no O_DIRECT")
    real_pwrite = os.pwrite
    refused: list[int] = []

    def refuse_direct(fd: int, data: bytes, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse_direct)
    data = pattern(2 * BLOCK + 100, 3)
    writer.write(data)
    assert (refused, writer.direct) == ([0], False)
    writer.close()
    assert part.read_bytes() == data


def test_a_full_disk_keeps_what_was_written_and_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = tmp_path / "style.safetensors.part"
    writer = PartWriter(part, 0, direct=False)
    real_pwrite = os.pwrite
    room = [BLOCK]

    def small_disk(fd: int, data: bytes, offset: int) -> int:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        count = real_pwrite(fd, memoryview(data)[: room[0]], offset)
        room[0] -= count
        return count

    monkeypatch.setattr(os, "pwrite", small_disk)
    data = pattern(3 * BLOCK, 4)
    with pytest.raises(OSError) as caught:
        writer.write(data)
    assert caught.value.errno == errno.ENOSPC
    writer.abandon()
    assert part.read_bytes() == data[:BLOCK]


MOUNTS = "\n".join(
    [
        "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
        "23 22 0:22 / /mnt rw,nosuid - tmpfs tmpfs rw,size=1024k",
        "24 23 0:23 / /mnt/nas rw,relatime shared:5 master:2 - nfs4 server:/export rw,vers=4.2",
        "25 23 8:17 / /mnt/my\\040models rw - xfs /dev/sdb1 rw",
        "26 22 8:33 / /srv rw - ext4 /dev/sdc1 rw",
        "27 26 0:40 / /srv rw - fuse.sshfs me@host: rw",
        "not a mountinfo line",
    ]
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "ext4"),
        ("/home/me/models/Users/carol", "ext4"),
        ("/mnt", "tmpfs"),
        ("/mnt/nasty/x", "tmpfs"),
        ("/mnt/nas/loras/a.safetensors", "nfs4"),
        ("/mnt/my models/Users", "xfs"),
        ("/srv/models", "fuse.sshfs"),
    ],
)
def test_the_filesystem_is_the_deepest_and_latest_mount_above_the_path(path: str, expected: str) -> None:
    assert filesystem_type(Path(path), MOUNTS) == expected


def test_no_mount_table_means_no_filesystem_type() -> None:
    assert filesystem_type(Path("/models"), "") is None
    assert not direct_io_suits(Path("/proc"))  # a pseudo filesystem, and no mount table off Linux
