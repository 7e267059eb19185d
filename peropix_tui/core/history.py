"""The history store: every saved image with its settings and a thumbnail, in one SQLite file.

Pages come newest first from an index, so the first page of 20,000 entries costs the same as of 20; deep pages
walk the index only (the row is fetched for the 50 rows shown, not the ones skipped). The text filter uses an FTS5
index over prompt, negative, character prompts, model and seed, or LIKE where SQLite lacks FTS5. One connection
behind a lock serves every thread; image copies and thumbnails are made outside it. A damaged database is set aside as
`<name>.corrupt-<time>` and a fresh one started, and `recovered` says so: history is an index of the outputs
folder, so `import_folder` can always rebuild it.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, cast

from PIL import Image, ImageOps, UnidentifiedImageError, features

from peropix_tui.core.atomicio import atomic_write_bytes, atomic_writer
from peropix_tui.core.capped_read import read_capped
from peropix_tui.core.errors import DiskFullError, PeropixError
from peropix_tui.core.metadata import CharacterPrompt, ImageMetadata, read_metadata, strip_metadata
from peropix_tui.core.metadata.reader import MAX_FILE_BYTES, MAX_SCAN_PIXELS, PILLOW_ERRORS

log = logging.getLogger(__name__)

PROVIDERS: Final = ("nai", "sandbox", "local", "import")
IMAGE_SUFFIXES: Final = (".png", ".webp", ".jpg", ".jpeg")
THUMBNAIL_SIDE: Final = 256
IMPORT_BATCH: Final = 200

_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_INT64_MIN, _INT64_END, _UINT64_END = -(1 << 63), 1 << 63, 1 << 64
_THUMBNAIL_FORMAT = "WEBP" if features.check("webp") else "PNG"
_NOT_STORED = frozenset({"raw", "warnings"})  # the file keeps its raw chunks; warnings belong to one read
_TRIGGERS = ("entries_fts_insert", "entries_fts_delete", "entries_fts_update")


class HistoryError(PeropixError):
    """A history operation that cannot be done (missing entry, file in the way, unusable database)."""


# --- schema --------------------------------------------------------------------------------------------------


def _create_entries(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            path TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            model TEXT,
            seed INTEGER,
            width INTEGER,
            height INTEGER,
            steps INTEGER,
            cfg REAL,
            sampler TEXT,
            prompt TEXT NOT NULL DEFAULT '',
            negative TEXT NOT NULL DEFAULT '',
            characters TEXT NOT NULL DEFAULT '',
            params TEXT NOT NULL DEFAULT '{}',
            favourite INTEGER NOT NULL DEFAULT 0,
            deleted INTEGER NOT NULL DEFAULT 0,
            trash_path TEXT
        )"""
    )
    conn.execute("CREATE INDEX entries_live ON entries (deleted, created DESC, id DESC)")
    conn.execute("CREATE INDEX entries_all ON entries (created DESC, id DESC)")
    conn.execute("CREATE INDEX entries_favourite ON entries (favourite, deleted, created DESC, id DESC)")
    # Thumbnails live apart so that a page scan reads small rows, not kilobytes of image per entry.
    conn.execute(
        """CREATE TABLE thumbnails (
            id INTEGER PRIMARY KEY REFERENCES entries (id) ON DELETE CASCADE,
            data BLOB NOT NULL
        )"""
    )


def _fts5_available(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp.fts5_probe")
    return True


def _install_text_index(conn: sqlite3.Connection) -> None:
    """The FTS5 index over the searchable columns, its sync triggers, and a rebuild from the rows already there."""
    if not _fts5_available(conn):
        return
    columns = "prompt, negative, characters, model, seed"
    new = "new.prompt, new.negative, new.characters, new.model, new.seed"
    old = "old.prompt, old.negative, old.characters, old.model, old.seed"
    # External content (the text stays in `entries` only); prefix indexes keep one- and two-letter searches fast.
    options = "content='entries', content_rowid='id', prefix='1 2'"
    conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5({columns}, {options})")
    insert = f"INSERT INTO entries_fts (rowid, {columns}) VALUES (new.id, {new});"
    delete = f"INSERT INTO entries_fts (entries_fts, rowid, {columns}) VALUES ('delete', old.id, {old});"
    conn.execute(f"CREATE TRIGGER IF NOT EXISTS entries_fts_insert AFTER INSERT ON entries BEGIN {insert} END")
    conn.execute(f"CREATE TRIGGER IF NOT EXISTS entries_fts_delete AFTER DELETE ON entries BEGIN {delete} END")
    conn.execute(
        f"CREATE TRIGGER IF NOT EXISTS entries_fts_update AFTER UPDATE OF {columns} ON entries "
        f"BEGIN {delete} {insert} END"
    )
    conn.execute("INSERT INTO entries_fts (entries_fts) VALUES ('rebuild')")


# Step N brings a database from user_version N-1 to N; a release only ever appends steps.
MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_create_entries, _install_text_index)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


# --- values --------------------------------------------------------------------------------------------------


def _int64(value: int | None) -> int | None:
    return value if value is not None and _INT64_MIN <= value < _INT64_END else None


def _seed_to_db(seed: int | None) -> int | None:
    """Seeds are unsigned 64-bit; SQLite integers are signed, so the top half is stored as negative numbers."""
    if seed is None or not 0 <= seed < _UINT64_END:
        return None
    return seed - _UINT64_END if seed >= _INT64_END else seed


def _seed_from_db(value: int | None) -> int | None:
    return None if value is None else value + _UINT64_END if value < 0 else value


def metadata_to_json(meta: ImageMetadata) -> str:
    """`meta` as stored in `params`: every normalised field, so settings applied back are exactly the same."""
    data: dict[str, Any] = {}
    for f in fields(ImageMetadata):
        if f.name in _NOT_STORED:
            continue
        value = getattr(meta, f.name)
        if f.name == "characters":
            value = [{"prompt": c.prompt, "negative": c.negative, "centers": c.centers} for c in value]
        data[f.name] = value
    try:
        return json.dumps(data, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"image settings cannot be stored: {exc}") from exc


def _character(value: dict[str, Any]) -> CharacterPrompt:
    centers = tuple((float(x), float(y)) for x, y in value.get("centers") or ()) or ((0.5, 0.5),)
    return CharacterPrompt(str(value.get("prompt", "")), str(value.get("negative", "")), centers)


def metadata_from_json(text: str) -> ImageMetadata:
    """The `ImageMetadata` stored by `metadata_to_json`; unreadable text gives empty settings and a warning."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        known = {f.name for f in fields(ImageMetadata)} - _NOT_STORED
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs["characters"] = [_character(c) for c in kwargs.get("characters") or () if isinstance(c, dict)]
        kwargs["loras"] = [(str(tag), str(name)) for tag, name in kwargs.get("loras") or ()]
        return ImageMetadata(**kwargs)
    except (ValueError, TypeError) as exc:
        return ImageMetadata(warnings=[f"stored settings could not be read ({exc})"])


def make_thumbnail(image_bytes: bytes, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A small WebP (PNG where Pillow lacks WebP) of at most `max_side` pixels a side, EXIF rotation applied."""
    try:
        with Image.open(io.BytesIO(image_bytes), formats=["PNG", "WEBP", "JPEG"]) as image:
            if image.width * image.height > MAX_SCAN_PIXELS:
                raise HistoryError(f"image {image.width}x{image.height} is too large for a thumbnail")
            image.draft("RGB", (max_side, max_side))
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
            small = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as exc:
        raise HistoryError("cannot make a thumbnail: not a PNG, WebP or JPEG image") from exc
    except PILLOW_ERRORS as exc:
        raise HistoryError(f"cannot make a thumbnail: {exc}") from exc
    opaque = small.mode not in ("RGBA", "LA", "PA", "P") and "transparency" not in small.info
    if not opaque:
        small = small.convert("RGBA")
        low, _high = cast("tuple[int, int]", small.getchannel("A").getextrema())
        opaque = low >= 250  # NovelAI alpha is 254/255 noise, not transparency
    small = small.convert("RGB") if opaque else small
    options: dict[str, Any] = {"quality": 75, "method": 4} if _THUMBNAIL_FORMAT == "WEBP" else {}
    buf = io.BytesIO()
    try:
        small.save(buf, format=_THUMBNAIL_FORMAT, **options)
    except PILLOW_ERRORS as exc:
        raise HistoryError(f"cannot encode a thumbnail: {exc}") from exc
    return buf.getvalue()


# --- records -------------------------------------------------------------------------------------------------

_COLUMNS = (
    "id, created, path, provider, model, seed, width, height, steps, cfg, sampler, prompt, negative, "
    "favourite, deleted, trash_path, params"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the history: key settings for the list, the full settings behind `metadata()`."""

    id: int
    created: float
    path: Path
    provider: str
    model: str | None
    seed: int | None
    width: int | None
    height: int | None
    steps: int | None
    cfg: float | None
    sampler: str | None
    prompt: str
    negative: str
    favourite: bool
    deleted: bool
    trash_path: Path | None
    params: str = field(repr=False)

    @property
    def location(self) -> Path | None:
        """Where the file is now: its own path, or its place in the trash (None when trashed while missing)."""
        return self.trash_path if self.deleted else self.path

    def metadata(self) -> ImageMetadata:
        return metadata_from_json(self.params)


def _entry(row: tuple[Any, ...]) -> Entry:
    trash_path = row[15]
    return Entry(
        row[0],
        row[1],
        Path(row[2]),
        row[3],
        row[4],
        _seed_from_db(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        bool(row[13]),
        bool(row[14]),
        None if trash_path is None else Path(trash_path),
        row[16],
    )


@dataclass(frozen=True, slots=True)
class TrashRecord:
    """What `undo_trash` needs to put an entry back; `trashed` is None when the file was already gone."""

    entry_id: int
    original: Path
    trashed: Path | None


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Files that could not be read, with the reason."""
    without_thumbnail: int = 0


def _key(path: Path | str) -> str:
    return str(Path(path).resolve())


def _row(path: Path | str, meta: ImageMetadata, provider: str, created: float) -> tuple[Any, ...]:
    if provider not in PROVIDERS:
        raise HistoryError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    return (
        created,
        _key(path),
        provider,
        meta.model,
        _seed_to_db(meta.seed),
        _int64(meta.width),
        _int64(meta.height),
        _int64(meta.steps),
        meta.cfg,
        meta.sampler,
        meta.prompt or "",
        meta.negative_prompt or "",
        "\n".join(c.prompt for c in meta.characters),
        metadata_to_json(meta),
    )


_UPSERT = """INSERT INTO entries
    (created, path, provider, model, seed, width, height, steps, cfg, sampler, prompt, negative, characters, params)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (path) DO UPDATE SET
        created = excluded.created, provider = excluded.provider, model = excluded.model, seed = excluded.seed,
        width = excluded.width, height = excluded.height, steps = excluded.steps, cfg = excluded.cfg,
        sampler = excluded.sampler, prompt = excluded.prompt, negative = excluded.negative,
        characters = excluded.characters, params = excluded.params"""


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_LIKE_CLAUSE = (
    "("
    + " OR ".join(
        f"{column} LIKE ? ESCAPE '\\'"
        for column in ("e.prompt", "e.negative", "e.characters", "e.model", "CAST(e.seed AS TEXT)")
    )
    + ")"
)


# --- files ---------------------------------------------------------------------------------------------------


def _free_path(path: Path) -> Path:
    """`path`, or `stem-2.ext`, `stem-3.ext`... the first name not taken."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _copy_file(src: Path, dst: Path) -> None:
    with src.open("rb") as fh, atomic_writer(dst) as out:
        shutil.copyfileobj(fh, out, 1 << 20)
    shutil.copystat(src, dst)


def _move_file(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` (a copy, then a delete, across filesystems); never replaces an existing file."""
    if dst.exists():
        raise HistoryError(f"cannot move {src.name} to {dst}: a file is already there")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise HistoryError(f"cannot move {src} to {dst}: {exc.strerror or exc}") from exc
        try:
            _copy_file(src, dst)
            src.unlink()
        except OSError as copy_exc:
            raise HistoryError(f"cannot move {src} to {dst}: {copy_exc.strerror or copy_exc}") from copy_exc


def _read_image(path: Path) -> bytes:
    return read_capped(path, MAX_FILE_BYTES, HistoryError, what="an image")


def _image_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath, name)


# --- the store -----------------------------------------------------------------------------------------------


class HistoryStore:
    """The history database at `path`, created or migrated on open; usable from any thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.recovered: str | None = None
        """Set when a damaged database was set aside and a new one started: the one-line message to show."""
        self._lock = threading.RLock()
        self._fts = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"cannot create the folder of {self.path}: {exc.strerror or exc}") from exc
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise HistoryError(f"cannot open the history database {self.path}: {exc}") from exc
            self.recovered = self._set_aside(exc)
            self._conn = self._open_fresh()

    # connection ----------------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path} was written by a newer peropix (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); update peropix or move the file away"
                )
            # Only now that the file is known to be ours: switching to WAL rewrites its header.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn, version)
            self._fts = self._check_text_index(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_fresh(self) -> sqlite3.Connection:
        try:
            return self._open()
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot create a new history database {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        for step in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[step](conn)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            log.info("history database %s migrated to schema %d", self.path, step + 1)

    def _check_text_index(self, conn: sqlite3.Connection) -> bool:
        """Whether the FTS index can be used; repairs it when SQLite's FTS5 support came or went since last time."""
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'entries_fts%'")}
        if "entries_fts" in names:
            try:
                conn.execute("SELECT 1 FROM entries_fts LIMIT 0")
            except sqlite3.OperationalError:
                # Written where FTS5 existed, opened where it does not: the triggers would make every write fail.
                for trigger in _TRIGGERS:
                    conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
                return False
            if names.issuperset(_TRIGGERS):
                return True
        elif not _fts5_available(conn):
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            _install_text_index(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return True

    def _set_aside(self, exc: sqlite3.Error) -> str:
        aside = _free_path(self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    os.replace(companion, aside.with_name(aside.name + suffix))
        except OSError as move_exc:
            raise HistoryError(
                f"history database {self.path} is damaged ({exc}) and cannot be moved aside: "
                f"{move_exc.strerror or move_exc}"
            ) from move_exc
        message = f"history database {self.path} was damaged ({exc}); kept it as {aside.name} and started a new one"
        log.warning("%s", message)
        return message

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Database errors as one-line `HistoryError`s; a damaged database is replaced by a fresh one."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                message = self._set_aside(exc)
                self._conn = self._open_fresh()
                self.recovered = message
                raise HistoryError(message + "; rescan the outputs folder to fill it") from exc
            if not isinstance(exc, sqlite3.OperationalError):
                raise
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL:
                raise DiskFullError(f"disk full while writing the history database {self.path}") from exc
            raise HistoryError(f"history database {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard():
            yield self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # adding --------------------------------------------------------------------------------------------------

    @staticmethod
    def _upsert(conn: sqlite3.Connection, row: tuple[Any, ...], thumbnail: bytes | None) -> int:
        conn.execute(_UPSERT, row)
        entry_id: int = conn.execute("SELECT id FROM entries WHERE path = ?", (row[1],)).fetchone()[0]
        if thumbnail is not None:
            conn.execute("INSERT OR REPLACE INTO thumbnails (id, data) VALUES (?, ?)", (entry_id, thumbnail))
        return entry_id

    def add(
        self,
        path: Path | str,
        meta: ImageMetadata,
        *,
        provider: str,
        thumbnail: bytes | None = None,
        created: float | None = None,
    ) -> int:
        """Index one image (or refresh its settings when the path is already known) and return its id."""
        row = _row(path, meta, provider, time.time() if created is None else created)
        with self._write() as conn:
            return self._upsert(conn, row, thumbnail)

    def import_folder(
        self,
        folder: Path | str,
        *,
        thumbnails: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportReport:
        """Index the images under `folder` (hidden files and folders left out) that the store does not know yet.

        Each file's metadata is read; one that is not an image is reported in `skipped`. The provider is the one
        recorded in the file's `peropix` fields when it was saved by this app, else "import"; the date is the
        file's modification time. `progress(done, total)` is called after each file.
        """
        report = ImportReport()
        root = Path(folder)
        if not root.is_dir():
            return report
        with self._read() as conn:
            known = {row[0] for row in conn.execute("SELECT path FROM entries")}
        todo = [path for path in _image_files(root) if _key(path) not in known]
        batch: list[tuple[tuple[Any, ...], bytes | None]] = []
        for done, path in enumerate(todo, 1):
            data = b""
            try:
                created = path.stat().st_mtime
                if thumbnails:
                    data = _read_image(path)
                meta = read_metadata(data or path)
            except (PeropixError, OSError) as exc:
                reason = str(exc) if isinstance(exc, PeropixError) else exc.strerror or str(exc)
                report.skipped.append((path, reason))
            else:
                thumb: bytes | None = None
                if thumbnails:
                    try:
                        thumb = make_thumbnail(data)
                    except HistoryError:
                        report.without_thumbnail += 1
                provider = meta.peropix.get("provider")
                provider = provider if provider in PROVIDERS else "import"
                batch.append((_row(path, meta, provider, created), thumb))
            if len(batch) >= IMPORT_BATCH or (batch and done == len(todo)):
                with self._write() as conn:
                    for row, thumb_bytes in batch:
                        self._upsert(conn, row, thumb_bytes)
                report.added += len(batch)
                batch.clear()
            if progress is not None:
                progress(done, len(todo))
        return report

    # reading -------------------------------------------------------------------------------------------------

    def _where(self, text: str | None, favourites: bool, include_deleted: bool) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if not include_deleted:
            clauses.append("e.deleted = 0")
        if favourites:
            clauses.append("e.favourite = 1")
        phrases: list[str] = []
        for term in (text or "").split():
            if self._fts and any(ch.isalnum() for ch in term):
                # A quoted FTS5 phrase: the tokenizer splits it like the indexed text; `*` matches word prefixes.
                phrases.append('"' + term.replace('"', '""') + '"*')
            else:
                clauses.append(_LIKE_CLAUSE)
                args.extend([_like(term)] * 5)
        if phrases:
            clauses.append("e.id IN (SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?)")
            args.append(" ".join(phrases))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def page(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        text: str | None = None,
        favourites: bool = False,
        include_deleted: bool = False,
    ) -> list[Entry]:
        """Entries newest first, `limit` of them after skipping `offset`; `text` keeps those whose prompt,
        negative, character prompts, model or seed contain every word (word prefixes with FTS5)."""
        if offset < 0 or limit < 0:
            raise HistoryError(f"page offset and limit must not be negative (got {offset}, {limit})")
        where, args = self._where(text, favourites, include_deleted)
        # The inner query walks the index alone, so skipped rows are never read; only the page is fetched.
        sql = (
            f"SELECT {_COLUMNS} FROM entries WHERE id IN ("
            f"SELECT e.id FROM entries AS e{where} ORDER BY e.created DESC, e.id DESC LIMIT ? OFFSET ?"
            ") ORDER BY created DESC, id DESC"
        )
        with self._read() as conn:
            return [_entry(row) for row in conn.execute(sql, [*args, limit, offset])]

    def count(self, *, text: str | None = None, favourites: bool = False, include_deleted: bool = False) -> int:
        where, args = self._where(text, favourites, include_deleted)
        with self._read() as conn:
            total: int = conn.execute(f"SELECT count(*) FROM entries AS e{where}", args).fetchone()[0]
        return total

    def get(self, entry_id: int) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else _entry(row)

    def _require(self, entry_id: int) -> Entry:
        entry = self.get(entry_id)
        if entry is None:
            raise HistoryError(f"no history entry with id {entry_id}")
        return entry

    def thumbnail(self, entry_id: int) -> bytes | None:
        with self._read() as conn:
            row = conn.execute("SELECT data FROM thumbnails WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else bytes(row[0])

    # changing ------------------------------------------------------------------------------------------------

    def _update(self, sql: str, args: tuple[Any, ...], entry_id: int) -> None:
        with self._write() as conn:
            if conn.execute(sql, args).rowcount == 0:
                raise HistoryError(f"no history entry with id {entry_id}")

    def set_thumbnail(self, entry_id: int, data: bytes) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone() is None:
                raise HistoryError(f"no history entry with id {entry_id}")
            conn.execute("INSERT OR REPLACE INTO thumbnails (id, data) VALUES (?, ?)", (entry_id, data))

    def set_favourite(self, entry_id: int, favourite: bool) -> None:
        self._update("UPDATE entries SET favourite = ? WHERE id = ?", (int(favourite), entry_id), entry_id)

    def trash(self, entry_id: int, trash_dir: Path | str) -> TrashRecord:
        """Move the entry's file into `trash_dir` and mark it deleted; `undo_trash` reverses both.

        Keep `trash_dir` on the same filesystem as the outputs (a hidden `.trash` folder inside them is skipped
        by `import_folder`) so the move is a rename.
        """
        with self._lock:
            entry = self._require(entry_id)
            if entry.deleted:
                raise HistoryError(f"history entry {entry_id} is already in the trash")
            trashed: Path | None = None
            if entry.path.exists():
                trashed = _free_path(Path(trash_dir) / f"{entry_id}_{entry.path.name}")
                _move_file(entry.path, trashed)
            try:
                self._update(
                    "UPDATE entries SET deleted = 1, trash_path = ? WHERE id = ?",
                    (None if trashed is None else _key(trashed), entry_id),
                    entry_id,
                )
            except BaseException:
                if trashed is not None:
                    _move_file(trashed, entry.path)
                raise
            return TrashRecord(entry_id, entry.path, None if trashed is None else Path(_key(trashed)))

    def undo_trash(self, record: TrashRecord) -> None:
        """Put a trashed entry's file back where it was and unmark it."""
        with self._lock:
            entry = self.get(record.entry_id)
            if entry is None:
                raise HistoryError(f"history entry {record.entry_id} was purged; {record.original.name} is gone")
            if not entry.deleted:
                raise HistoryError(f"history entry {record.entry_id} is not in the trash")
            if record.trashed is not None:
                if not record.trashed.exists():
                    raise HistoryError(f"cannot restore {record.original.name}: {record.trashed} is gone")
                _move_file(record.trashed, record.original)
            try:
                self._update(
                    "UPDATE entries SET deleted = 0, trash_path = NULL WHERE id = ?",
                    (record.entry_id,),
                    record.entry_id,
                )
            except BaseException:
                if record.trashed is not None:
                    _move_file(record.original, record.trashed)
                raise

    def purge_trash(self) -> int:
        """Delete the files of every trashed entry and forget them; returns how many entries were purged."""
        with self._lock:
            with self._read() as conn:
                trashed = conn.execute("SELECT id, trash_path FROM entries WHERE deleted = 1").fetchall()
            purged: list[tuple[int]] = []
            failures: list[str] = []
            for entry_id, trash_path in trashed:
                try:
                    if trash_path is not None:
                        Path(trash_path).unlink(missing_ok=True)
                except OSError as exc:
                    failures.append(f"{trash_path}: {exc.strerror or exc}")
                    continue
                purged.append((entry_id,))
            with self._write() as conn:
                conn.executemany("DELETE FROM entries WHERE id = ?", purged)
        if failures:
            raise HistoryError(
                f"purged {len(purged)} entries; {len(failures)} files could not be deleted (first: {failures[0]})"
            )
        return len(purged)

    def remove_missing(self) -> int:
        """Forget entries whose file is gone (trashed ones whose trash file is gone too); returns how many."""
        with self._read() as conn:
            rows = conn.execute("SELECT id, path, deleted, trash_path FROM entries").fetchall()
        gone: list[tuple[int, int]] = []
        for entry_id, path, deleted, trash_path in rows:
            where = trash_path if deleted else path
            if where is None or not Path(where).exists():
                gone.append((entry_id, deleted))
        with self._write() as conn:
            # Only rows still as they were seen: one trashed or restored meanwhile has its file elsewhere now.
            removed: int = conn.executemany("DELETE FROM entries WHERE id = ? AND deleted = ?", gone).rowcount
        return removed

    def relocate(self, entry_id: int, path: Path | str) -> None:
        """Point the entry at its file's new place (an unsaved image saved into the outputs folder)."""
        try:
            self._update("UPDATE entries SET path = ? WHERE id = ?", (_key(path), entry_id), entry_id)
        except sqlite3.IntegrityError as exc:
            raise HistoryError(f"cannot move history entry {entry_id} to {path}: another entry has it") from exc

    def forget(self, paths: Iterable[Path | str]) -> int:
        """Drop the entries of these files (deleted outside the history, e.g. pruned); returns how many."""
        keys = [(_key(path),) for path in paths]
        with self._write() as conn:
            forgotten: int = conn.executemany("DELETE FROM entries WHERE path = ?", keys).rowcount
        return forgotten

    # copies --------------------------------------------------------------------------------------------------

    def _source(self, entry_id: int) -> tuple[Entry, Path]:
        entry = self._require(entry_id)
        source = entry.location
        if source is None or not source.exists():
            raise HistoryError(f"the file of history entry {entry_id} is gone ({source or entry.path})")
        return entry, source

    def export(self, entry_id: int, dest_dir: Path | str) -> Path:
        """Copy the image into `dest_dir` with its generation metadata stripped (pixels as they are)."""
        entry, source = self._source(entry_id)
        stripped = strip_metadata(_read_image(source)).data
        dest = _free_path(Path(dest_dir) / entry.path.name)
        atomic_write_bytes(dest, stripped)
        return dest

    def favourite_copy(self, entry_id: int, gallery_dir: Path | str) -> Path:
        """Copy the image, metadata kept, into `gallery_dir` and mark the entry a favourite.

        Copying the same image twice gives back the first copy rather than a duplicate.
        """
        entry, source = self._source(entry_id)
        dest = Path(gallery_dir) / entry.path.name
        if not (dest.exists() and filecmp.cmp(source, dest, shallow=False)):
            dest = _free_path(dest)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(source, dest)
            except OSError as exc:
                raise HistoryError(f"cannot copy {source} to {dest}: {exc.strerror or exc}") from exc
        self.set_favourite(entry_id, True)
        return dest
