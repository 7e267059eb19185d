"""The LoRA files on disk as a prompt writer sees them: which name each answers to in a `<lora:name:w>` tag.

A file answers to its file stem and to its kohya `ss_output_name` (the name the trainer gave it, which UIs
offer as the file's alias). When two files answer to the same name, a tag using it is ambiguous; names are
compared ignoring case, since tags are typed by hand and some file systems ignore case too. Scanning reads
only headers; a damaged file becomes an entry with a one-line error, so one bad download never hides the rest.
Entries keep only the short fields a table shows: metadata blobs can be hundreds of kilobytes per file, so
the full map is read again, for one file, when someone asks for its details.
"""

from __future__ import annotations

import json
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peropix_tui.core.folder_walk import FolderWalk
from peropix_tui.core.safetensors import SafetensorsError, SafetensorsHeader, read_header

SUFFIX = ".safetensors"
DEFAULT_BATCH = 64
VALUE_LIMIT = 160  # longest metadata value shown as it is; longer ones are summarised or cut
_BLOB_KEYS = frozenset({"ss_tag_frequency", "ss_datasets", "ss_bucket_info", "ss_dataset_dirs"})
_TIMESTAMP_KEYS = frozenset({"ss_training_started_at", "ss_training_finished_at"})
_RANK_SUFFIXES = ("lora_down.weight", "lora_A.weight")
_FIELD_LIMIT = 200  # table fields come from files anyone could have written


@dataclass(frozen=True, slots=True)
class LoraFile:
    """One `.safetensors` file under a LoRA folder; `error` is set (and the metadata fields empty) when its
    header could not be read."""

    path: Path
    folder: Path
    size: int
    mtime: float
    output_name: str | None = None
    base_model: str = ""
    network_module: str = ""
    network_dim: str = ""
    network_alpha: str = ""
    tensor_count: int = 0
    error: str | None = None

    @property
    def stem(self) -> str:
        return self.path.name[: -len(SUFFIX)] if self.path.name.lower().endswith(SUFFIX) else self.path.stem

    @property
    def relative(self) -> str:
        """The path below its LoRA folder, as the table shows it."""
        try:
            return str(self.path.relative_to(self.folder))
        except ValueError:
            return str(self.path)

    @property
    def tag_name(self) -> str:
        """The name a `<lora:name:w>` tag should use: the trainer's output name, else the file stem."""
        return self.output_name or self.stem

    @property
    def names(self) -> frozenset[str]:
        """Every name this file answers to, case-folded."""
        return frozenset(n.casefold() for n in (self.stem, self.output_name) if n)

    @property
    def stem_differs(self) -> bool:
        """The file was renamed after training: its stem and its output name disagree."""
        return self.output_name is not None and self.output_name != self.stem

    @property
    def short_error(self) -> str | None:
        """The error without the folder part of the path, for a table cell."""
        if self.error is None:
            return None
        prefix = f"{self.path}: "
        if self.error.startswith(prefix):
            return self.error[len(prefix) :]
        return self.error.replace(str(self.path), self.path.name)

    def tag(self, weight: str = "1") -> str:
        return f"<lora:{self.tag_name}:{weight}>"


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A folder that could not be walked (missing, unreadable); the scan goes on without it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def read_lora_file(path: Path, folder: Path) -> LoraFile:
    """The table entry for one file; never raises for a bad file, it records the reason instead."""
    try:
        st = path.stat()
    except OSError as exc:
        return LoraFile(path, folder, 0, 0.0, error=f"cannot read {path}: {exc.strerror or exc}")
    try:
        header = read_header(path)
    except SafetensorsError as exc:
        return LoraFile(path, folder, st.st_size, st.st_mtime, error=str(exc))
    meta = header.metadata

    def field(*keys: str) -> str:
        value = next((meta[k] for k in keys if meta.get(k, "").strip()), "")
        return single_line(value, _FIELD_LIMIT)

    return LoraFile(
        path,
        folder,
        st.st_size,
        st.st_mtime,
        output_name=field("ss_output_name") or None,
        base_model=field("ss_base_model_version", "modelspec.architecture"),
        network_module=field("ss_network_module"),
        network_dim=field("ss_network_dim") or _rank_from_shapes(header),
        network_alpha=field("ss_network_alpha"),
        tensor_count=len(header.tensors),
    )


def _rank_from_shapes(header: SafetensorsHeader) -> str:
    """Files saved without kohya metadata still show their rank: the first dimension of a down weight."""
    for name, info in header.tensors.items():
        if name.endswith(_RANK_SUFFIXES) and info.shape:
            return str(info.shape[0])
    return ""


class LoraScanner:
    """Walks LoRA folders (recursively, following links, each real file once) and reads every header.

    Problems with folders are collected in `problems`; files reached twice, through overlapping folders or
    links, are listed once, so they are never mistaken for a name collision.
    """

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = [Path(f).expanduser() for f in folders]
        self.problems: list[ScanProblem] = []
        self._folders = FolderWalk()

    def paths(self) -> Iterator[tuple[Path, Path]]:
        """`(folder, file)` for every LoRA file, in a stable order (folders as configured, then by name)."""
        for folder in self.folders:
            if not folder.is_dir():
                reason = "is not a folder" if folder.exists() else "does not exist"
                self.problems.append(ScanProblem(folder, reason))
                continue
            yield from ((folder, p) for p in self._walk(folder))

    def _walk(self, folder: Path) -> Iterator[Path]:
        def failed(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else folder
            self.problems.append(ScanProblem(where, f"cannot be read ({exc.strerror or exc})"))

        for path, st in self._folders.files(folder, (SUFFIX,), failed):
            if isinstance(st, OSError) or stat.S_ISREG(st.st_mode):
                yield path  # read_lora_file records why one that cannot be stat'ed cannot be read

    def batches(
        self, size: int = DEFAULT_BATCH, *, cancelled: Callable[[], bool] | None = None
    ) -> Iterator[list[LoraFile]]:
        """Entries in batches of up to `size`; stops early (after the current file) once `cancelled()`."""
        batch: list[LoraFile] = []
        for folder, path in self.paths():
            if cancelled is not None and cancelled():
                return
            batch.append(read_lora_file(path, folder))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


class LoraLibrary:
    """Scanned entries and the name index that finds collisions."""

    def __init__(self, files: Iterable[LoraFile] = (), problems: Iterable[ScanProblem] = ()) -> None:
        self.files: list[LoraFile] = []
        self.problems: list[ScanProblem] = list(problems)
        self._by_name: dict[str, list[LoraFile]] = {}
        self.add(files)

    @classmethod
    def scan(cls, folders: Sequence[Path]) -> LoraLibrary:
        """Scan in one go (for the command line); the TUI uses `LoraScanner.batches` to show rows early."""
        scanner = LoraScanner(folders)
        files = [f for batch in scanner.batches() for f in batch]
        return cls(files, scanner.problems)

    def add(self, files: Iterable[LoraFile]) -> None:
        for entry in files:
            self.files.append(entry)
            if entry.error is None:
                for name in entry.names:
                    self._by_name.setdefault(name, []).append(entry)

    def answering_to(self, name: str) -> list[LoraFile]:
        """Readable files a tag with this name could mean."""
        return list(self._by_name.get(name.strip().casefold(), ()))

    def collisions(self, entry: LoraFile) -> list[LoraFile]:
        """Other files answering to one of this file's names."""
        if entry.error is not None:
            return []
        others: dict[Path, LoraFile] = {}
        for name in sorted(entry.names):
            for other in self._by_name.get(name, ()):
                if other.path != entry.path:
                    others.setdefault(other.path, other)
        return list(others.values())

    @property
    def damaged(self) -> list[LoraFile]:
        return [f for f in self.files if f.error is not None]

    @property
    def colliding(self) -> list[LoraFile]:
        return [f for f in self.files if self.collisions(f)]


# Details of one file ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoraDetails:
    """Everything the detail view shows of one file: each metadata key on one line, and the top tags."""

    path: Path
    metadata: list[tuple[str, str]]
    top_tags: list[tuple[str, int]]
    distinct_tags: int
    tensor_count: int


def read_lora_details(path: Path, *, top: int = 20) -> LoraDetails:
    """Read one file's header again and summarise it; raises `SafetensorsError` for a damaged file."""
    header = read_header(path)
    counts = tag_frequency(header.metadata)
    return LoraDetails(
        path=path,
        metadata=describe_metadata(header.metadata),
        top_tags=counts.most_common(top),
        distinct_tags=len(counts),
        tensor_count=len(header.tensors),
    )


def tag_frequency(metadata: Mapping[str, str]) -> Counter[str]:
    """Caption tag counts over all training folders, from `ss_tag_frequency` (else from `ss_datasets`).

    Malformed blobs count as no tags: this is a summary for people, and the raw value is still shown.
    """
    counts: Counter[str] = Counter()
    for folders in _tag_maps(metadata):
        for tags in folders.values():
            if not isinstance(tags, dict):
                continue
            for tag, count in tags.items():
                if isinstance(count, int) and not isinstance(count, bool) and count > 0 and str(tag).strip():
                    counts[str(tag).strip()] += count
    return counts


def _tag_maps(metadata: Mapping[str, str]) -> list[dict[str, Any]]:
    direct = _json_value(metadata.get("ss_tag_frequency"))
    if isinstance(direct, dict):
        return [direct]
    datasets = _json_value(metadata.get("ss_datasets"))
    if not isinstance(datasets, list):
        return []
    return [d["tag_frequency"] for d in datasets if isinstance(d, dict) and isinstance(d.get("tag_frequency"), dict)]


def _json_value(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def describe_metadata(metadata: Mapping[str, str], *, limit: int = VALUE_LIMIT) -> list[tuple[str, str]]:
    """Every metadata key, sorted, with a one-line value: JSON blobs and embedded images summarised."""
    rows: list[tuple[str, str]] = []
    for key in sorted(metadata):
        rows.append((single_line(key, 80), _describe_value(key, metadata[key], limit)))
    return rows


def _describe_value(key: str, value: str, limit: int) -> str:
    if key == "ss_tag_frequency":
        maps = _tag_maps({key: value})
        if maps:
            folders = maps[0]
            distinct = len(tag_frequency({key: value}))
            return f"{distinct} distinct tags over {len(folders)} folder(s), {format_size(len(value))}"
    if value.startswith("data:") and len(value) > limit:
        kind = value[5:].split(";", 1)[0].split(",", 1)[0] or "data"
        return f"embedded {single_line(kind, 40)}, {format_size(len(value))}"
    if key in _TIMESTAMP_KEYS:
        try:
            when = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            return single_line(value, limit)
        return f"{single_line(value, 40)} ({when:%Y-%m-%d %H:%M} UTC)"
    if len(value) > limit and (key in _BLOB_KEYS or value[:1] in "{["):
        parsed = _json_value(value)
        if isinstance(parsed, dict):
            return f"JSON object, {len(parsed)} keys, {format_size(len(value))}"
        if isinstance(parsed, list):
            return f"JSON list, {len(parsed)} items, {format_size(len(value))}"
    return single_line(value, limit)


def single_line(text: str, limit: int) -> str:
    """Text for one table cell: whitespace runs folded, control characters shown escaped, cut at `limit`."""
    folded = " ".join(text.split())
    if not folded.isprintable():
        folded = "".join(c if c.isprintable() else _escape(c) for c in folded)
    return folded if len(folded) <= limit else folded[: max(limit - 1, 0)] + "…"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_size(size: int) -> str:
    """Bytes in binary units, one decimal: `228.5 MiB`."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
