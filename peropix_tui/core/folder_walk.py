"""Walking model folders the way users arrange them: links followed, every real folder and file visited once.

Model folders are often assembled from symbolic links (a shared drive, another tool's folder); a link back up the
tree must not loop, and a file reached twice (two roots, or two links to it) must not be listed twice.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

OnError = Callable[[OSError], None]


class FolderWalk:
    """One walk over several roots: folders and files already seen from an earlier root are skipped."""

    def __init__(self) -> None:
        self._dirs: set[tuple[int, int]] = set()
        self._files: set[tuple[int, int]] = set()

    def seen(self, folder: Path) -> bool:
        """Whether `folder` (or the folder it links to) was walked already."""
        try:
            st = folder.stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self._dirs

    def files(
        self, folder: Path, suffixes: tuple[str, ...], on_error: OnError
    ) -> Iterator[tuple[Path, os.stat_result | OSError]]:
        """`(path, stat)` of the files under `folder` whose lower-case name ends with one of `suffixes`, in name
        order; a regular file reached before is left out. Unreadable folders go to `on_error`. `stat` is the error
        when it failed, and may be that of a special file (a FIFO, a device): what to say of those is the caller's.
        """
        for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=True):
            try:
                st = Path(dirpath).stat()
            except OSError as exc:
                on_error(exc)
                dirnames.clear()
                continue
            if (st.st_dev, st.st_ino) in self._dirs:
                dirnames.clear()  # a link back up the tree, or a folder reached before
                continue
            self._dirs.add((st.st_dev, st.st_ino))
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(suffixes):
                    path = Path(dirpath, name)
                    try:
                        fst: os.stat_result | OSError = path.stat()
                    except OSError as exc:
                        fst = exc
                    if isinstance(fst, os.stat_result) and stat.S_ISREG(fst.st_mode):
                        if (fst.st_dev, fst.st_ino) in self._files:
                            continue
                        self._files.add((fst.st_dev, fst.st_ino))
                    yield path, fst
