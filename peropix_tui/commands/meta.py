"""`peropix meta show|strip FILE...`: read or remove image generation metadata from a script.

Each file is handled on its own: a damaged one prints one line on stderr and the rest still run; the exit
code is 1 when any file failed, else 0. The codec (Pillow, numpy) is imported when a sub-command runs, so
registering the parser costs nothing at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from peropix_tui.core.atomicio import atomic_write_bytes
from peropix_tui.core.errors import PeropixError

if TYPE_CHECKING:
    from peropix_tui.core.metadata import ImageMetadata

log = logging.getLogger(__name__)

_LABEL_WIDTH = 14


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    meta = sub.add_parser("meta", help="show or strip image generation metadata")
    meta_sub = meta.add_subparsers(dest="meta_command", metavar="ACTION", required=True)

    show = meta_sub.add_parser("show", help="print the generation settings stored in images")
    show.add_argument("files", nargs="+", type=Path, metavar="FILE")
    show.add_argument("--json", action="store_true", help="print one JSON document (a list, one object per file)")
    show.set_defaults(func=_show)

    strip = meta_sub.add_parser("strip", help="remove metadata (text chunks, EXIF, stealth alpha) from images")
    strip.add_argument("files", nargs="+", type=Path, metavar="FILE")
    where = strip.add_mutually_exclusive_group(required=True)
    where.add_argument("--in-place", action="store_true", help="overwrite each file (atomically)")
    where.add_argument("-o", "--output", type=Path, metavar="DIR", help="write stripped copies into DIR")
    strip.set_defaults(func=_strip)


def _fail(message: str) -> None:
    log.error("%s", message)
    print(f"peropix: {message}", file=sys.stderr)


def _indent(text: str) -> str:
    """Continuation lines of a multi-line prompt line up under the first; trailing newlines are dropped."""
    return text.rstrip("\n").replace("\n", "\n" + " " * (_LABEL_WIDTH + 2))


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _lines(meta: ImageMetadata) -> list[str]:
    rows: list[tuple[str, str]] = [("found in", ", ".join(meta.found_in) or "nothing")]
    if meta.prompt is not None:
        rows.append(("prompt", meta.prompt))
    if meta.negative_prompt is not None:
        rows.append(("negative", meta.negative_prompt))
    if meta.model is not None or meta.model_hash is not None:
        model = meta.model or "?"
        rows.append(("model", f"{model} ({meta.model_hash})" if meta.model_hash else model))
    if meta.seed is not None:
        rows.append(("seed", str(meta.seed)))
    if meta.steps is not None:
        rows.append(("steps", str(meta.steps)))
    if meta.cfg is not None or meta.cfg_rescale is not None:
        cfg = "?" if meta.cfg is None else _number(meta.cfg)
        rescale = "" if meta.cfg_rescale is None else f" (rescale {_number(meta.cfg_rescale)})"
        rows.append(("cfg", cfg + rescale))
    if meta.sampler is not None:
        smea = " + SMEA DYN" if meta.smea_dyn else " + SMEA" if meta.smea else ""
        rows.append(("sampler", meta.sampler + smea))
    if meta.scheduler is not None:
        rows.append(("scheduler", meta.scheduler))
    if meta.width is not None and meta.height is not None:
        rows.append(("size", f"{meta.width}x{meta.height}"))
    if meta.strength is not None:
        noise = "" if meta.noise is None else f" (noise {_number(meta.noise)})"
        rows.append(("strength", _number(meta.strength) + noise))
    if meta.loras:
        rows.append(("loras", ", ".join(tag for tag, _name in meta.loras)))
    if meta.software is not None:
        rows.append(("software", meta.software))
    lines = [f"  {label + ':':<{_LABEL_WIDTH}}{_indent(value)}" for label, value in rows]
    for number, char in enumerate(meta.characters, 1):
        where = ", ".join(f"({_number(x)}, {_number(y)})" for x, y in char.centers)
        lines.append(f"  {f'character {number}:':<{_LABEL_WIDTH}}{where} {_indent(char.prompt)}")
        if char.negative:
            lines.append(f"  {'':<{_LABEL_WIDTH}}negative: {_indent(char.negative)}")
    lines.extend(f"  warning: {warning}" for warning in meta.warnings)
    return lines


def _as_json(path: Path, meta: ImageMetadata) -> dict[str, Any]:
    fields = dataclasses.asdict(meta)
    del fields["comment_keys"]
    return {"file": str(path), **fields}


def _show(args: argparse.Namespace) -> int:
    from peropix_tui.core.metadata import MetadataError, read_metadata

    failed = False
    documents: list[dict[str, Any]] = []
    for path in args.files:
        try:
            meta = read_metadata(path)
        except MetadataError as exc:
            _fail(str(exc))
            documents.append({"file": str(path), "error": str(exc)})
            failed = True
            continue
        if args.json:
            documents.append(_as_json(path, meta))
        else:
            print(path)
            print("\n".join(_lines(meta)) if not meta.is_empty else "  no generation metadata")
    if args.json:
        sys.stdout.write(orjson.dumps(documents, option=orjson.OPT_INDENT_2).decode("utf-8") + "\n")
    return 1 if failed else 0


def _read(path: Path) -> bytes:
    from peropix_tui.core.metadata import MetadataError
    from peropix_tui.core.metadata.reader import MAX_FILE_BYTES

    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise MetadataError(f"file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit")
    return data


def _strip_one(path: Path, in_place: bool, out_dir: Path | None, written: set[Path]) -> str:
    from peropix_tui.core.metadata import MetadataError, strip_metadata

    target = path if in_place or out_dir is None else out_dir / path.name
    if target in written:
        raise MetadataError(f"{target} was already written from another input of the same name")
    data = _read(path)
    result = strip_metadata(data)
    for warning in result.warnings:
        print(f"peropix: {path}: warning: {warning}", file=sys.stderr)
    removed = ", ".join(result.removed) if result.removed else "nothing to remove"
    if in_place:
        if result.changed:
            atomic_write_bytes(path, result.data)
        written.add(target)
        return f"{path}: {removed}"
    if target.exists() and target.resolve() == path.resolve():
        raise MetadataError("output would overwrite the input; use --in-place for that")
    atomic_write_bytes(target, result.data)
    written.add(target)
    return f"{path} -> {target}: {removed}"


def _strip(args: argparse.Namespace) -> int:
    failed = False
    written: set[Path] = set()
    for path in args.files:
        try:
            print(_strip_one(path, args.in_place, args.output, written))
        except PeropixError as exc:
            _fail(f"{path}: {exc}")
            failed = True
    return 1 if failed else 0
