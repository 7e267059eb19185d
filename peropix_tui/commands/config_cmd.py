"""`peropix config …` and `peropix secrets …`: the settings the Settings screen edits, from a script."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import orjson

from peropix_tui.core.config import LEAVES, Config
from peropix_tui.core.errors import ConfigError
from peropix_tui.core.paths import AppDirs
from peropix_tui.core.secrets import SECRET_LABELS, SECRET_NAMES, SecretName, SecretStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cfg = sub.add_parser("config", help="show or change settings")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cfg_sub.add_parser("show", help="print every setting, its value and where it came from")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)
    cfg_sub.add_parser("path", help="print the config, secrets, data and log locations").set_defaults(func=_path)
    get = cfg_sub.add_parser("get", help="print one setting")
    get.add_argument("key", choices=list(LEAVES), metavar="KEY")
    get.set_defaults(func=_get)
    set_ = cfg_sub.add_parser("set", help="change one setting (validated, saved atomically)")
    set_.add_argument("key", choices=list(LEAVES), metavar="KEY")
    set_.add_argument("value", help="the new value; lists as a,b,c or a JSON array")
    set_.set_defaults(func=_set)

    sec = sub.add_parser("secrets", help="store the NovelAI token and CivitAI API key (file mode 0600)")
    sec_sub = sec.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    sec_sub.add_parser("show", help="show which secrets are set (redacted)").set_defaults(func=_secrets_show)
    sset = sec_sub.add_parser("set", help="store a secret; read from a hidden prompt or, with --stdin, stdin")
    sset.add_argument("name", choices=SECRET_NAMES)
    sset.add_argument("--stdin", action="store_true", help="read the value from standard input")
    sset.set_defaults(func=_secrets_set)
    sclear = sec_sub.add_parser("clear", help="remove a secret from the file")
    sclear.add_argument("name", choices=SECRET_NAMES)
    sclear.set_defaults(func=_secrets_clear)


def _load() -> Config:
    cfg = Config.load(AppDirs.from_env())
    for issue in cfg.issues:
        print(f"peropix: warning: {issue}", file=sys.stderr)
    return cfg


def _source(cfg: Config, key: str) -> str:
    if key in cfg.overridden:
        return f"${cfg.overridden[key]}"
    return "default" if cfg.get(key) == LEAVES[key].default else "config"


def _show(args: argparse.Namespace) -> int:
    cfg = _load()
    if args.json:
        out: dict[str, Any] = {key: {"value": value, "source": _source(cfg, key)} for key, value in cfg.items()}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    width = max(len(k) for k in LEAVES)
    for key, value in cfg.items():
        shown = orjson.dumps(value).decode()
        print(f"{key:<{width}}  {shown}  ({_source(cfg, key)})")
    return 0


def _path(args: argparse.Namespace) -> int:
    dirs = AppDirs.from_env()
    print(f"config   {dirs.config_file}")
    print(f"secrets  {dirs.secrets_file}")
    print(f"data     {dirs.data_dir}")
    print(f"log      {dirs.log_file}")
    return 0


def _get(args: argparse.Namespace) -> int:
    value = _load().get(args.key)
    print(value if isinstance(value, str) else orjson.dumps(value).decode())
    return 0


def _set(args: argparse.Namespace) -> int:
    cfg = _load()
    stored = cfg.set(args.key, args.value, from_text=True)
    cfg.save()
    print(f"{args.key} = {orjson.dumps(stored).decode()}  (saved to {cfg.path})")
    return 0


def _store() -> SecretStore:
    return SecretStore(AppDirs.from_env().secrets_file)


def _secrets_show(args: argparse.Namespace) -> int:
    store = _store()
    if store.problem:
        print(f"peropix: warning: {store.problem}", file=sys.stderr)
    for name in SECRET_NAMES:
        print(f"{SECRET_LABELS[name]:<16} {store.describe(name)}")
    return 0


def _secrets_set(args: argparse.Namespace) -> int:
    name: SecretName = args.name
    if args.stdin:
        value = sys.stdin.readline()
    elif sys.stdin.isatty():
        value = getpass.getpass(f"{SECRET_LABELS[name]}: ")
    else:
        raise ConfigError("no terminal to ask for the secret; pass --stdin and pipe it in")
    store = _store()
    store.set(name, value)
    print(f"{SECRET_LABELS[name]} saved: {store.describe(name)}")
    return 0


def _secrets_clear(args: argparse.Namespace) -> int:
    name: SecretName = args.name
    _store().set(name, None)
    print(f"{SECRET_LABELS[name]} removed from {AppDirs.from_env().secrets_file}")
    return 0
