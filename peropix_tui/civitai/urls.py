"""Who to collect: creator URLs, bare usernames and batch files of them.

CivitAI runs one app on two hosts since 2026 (`civitai.com` for SFW, `civitai.red` for everything), so a
creator page on either host is accepted, with or without `www.`, a scheme, `/models` or a trailing slash.
A batch file holds one creator per line; `#` starts a comment line, blank lines are ignored, and a bad line
is reported with its number and skipped, so one typo never stops a night's batch.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from peropix_tui.civitai.errors import CreatorRefError

CIVITAI_SITES: tuple[str, ...] = ("civitai.com", "civitai.red")
MAX_USERNAME_LEN = 100
MAX_BATCH_BYTES = 4 * 1024 * 1024
_CREATOR_TABS = frozenset({"", "models"})


@dataclass(frozen=True, slots=True)
class CreatorRef:
    """One creator to collect; `site` is the origin a URL named (`https://civitai.red`), None for a bare name."""

    username: str
    site: str | None = None


@dataclass(frozen=True, slots=True)
class BatchLine:
    """A batch-file line that named a creator."""

    line: int
    creator: CreatorRef


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """A batch-file line that was skipped, and why."""

    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Batch:
    creators: list[BatchLine]
    problems: list[BatchProblem]


def split_url(url: str) -> SplitResult | None:
    """`urlsplit`, or None for text it refuses (an unbalanced `[`, a bad port): URLs come from strangers."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return None
    return parts


def host_of(url: str) -> str:
    """The lower-case host of a URL, empty when it has none or cannot be read."""
    parts = split_url(url)
    return (parts.hostname or "").lower() if parts is not None else ""


def is_civitai_host(host: str) -> bool:
    """`civitai.com`, `civitai.red` or any subdomain of them (the API, image CDN and B2 origin hosts)."""
    host = host.lower().rstrip(".")
    return any(host == site or host.endswith("." + site) for site in CIVITAI_SITES)


def parse_creator(text: str) -> CreatorRef:
    """A creator from a profile URL (`https://civitai.com/user/<name>[/models]`) or a bare username."""
    raw = text.strip()
    if not raw:
        raise CreatorRefError("empty creator: give a CivitAI profile URL or a username")
    if "://" not in raw and "/" not in raw:
        if raw.lower().removeprefix("www.") in CIVITAI_SITES:
            raise CreatorRefError(f"{raw!r} names the site but no creator; use https://{raw}/user/<name>")
        return CreatorRef(_check_username(raw, raw))
    parts = split_url(raw if "://" in raw else f"https://{raw}")
    if parts is None:
        raise CreatorRefError(f"{raw!r} is not a valid URL")
    if parts.scheme not in ("http", "https"):
        raise CreatorRefError(f"{raw!r} is not a CivitAI URL (scheme {parts.scheme!r})")
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    if host not in CIVITAI_SITES:
        raise CreatorRefError(f"{raw!r} is not on civitai.com or civitai.red")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if len(segments) < 2 or segments[0].lower() != "user":
        kind = "a model page" if segments and segments[0].lower() == "models" else "not a creator page"
        raise CreatorRefError(f"{raw!r} is {kind}; use https://{host}/user/<name> or just the name")
    tab = "/".join(segments[2:]).lower()
    if tab not in _CREATOR_TABS:
        raise CreatorRefError(f"{raw!r}: only a creator's profile or /models page can be collected, not /{tab}")
    return CreatorRef(_check_username(segments[1], raw), f"https://{host}")


def _check_username(name: str, source: str) -> str:
    name = unicodedata.normalize("NFC", name.strip())
    if name.startswith("@"):
        name = name[1:]
    if not name:
        raise CreatorRefError(f"{source!r} holds no username")
    if len(name) > MAX_USERNAME_LEN:
        raise CreatorRefError(f"username in {source[:60]!r}… is longer than {MAX_USERNAME_LEN} characters")
    bad = next((c for c in name if c.isspace() or not c.isprintable() or c in "/\\?#"), None)
    if bad is not None:
        raise CreatorRefError(f"{source!r} is not a username: it contains {bad!r}")
    return name


def parse_batch(text: str) -> Batch:
    """Creators from batch text, in order, each username once; bad lines become problems with their number."""
    creators: list[BatchLine] = []
    problems: list[BatchProblem] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            creator = parse_creator(stripped)
        except CreatorRefError as exc:
            problems.append(BatchProblem(number, stripped, str(exc)))
            continue
        key = creator.username.casefold()
        if key in seen:
            continue
        seen.add(key)
        creators.append(BatchLine(number, creator))
    return Batch(creators, problems)


def read_batch_file(path: Path) -> Batch:
    """Parse a batch file; a file that cannot be read as UTF-8 text is one error naming it."""
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise CreatorRefError(f"batch file {path} is {size} bytes; the limit is {MAX_BATCH_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CreatorRefError(f"batch file {path} does not exist") from None
    except IsADirectoryError:
        raise CreatorRefError(f"batch file {path} is a folder") from None
    except OSError as exc:
        raise CreatorRefError(f"cannot read batch file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CreatorRefError(f"batch file {path} is not UTF-8 text (line {line})") from None
    return parse_batch(text)


def unique_creators(creators: list[CreatorRef]) -> list[CreatorRef]:
    """Each creator once, in first-seen order; usernames compare without case, as CivitAI's do."""
    seen: set[str] = set()
    unique = []
    for creator in creators:
        if creator.username.casefold() not in seen:
            seen.add(creator.username.casefold())
            unique.append(creator)
    return unique
