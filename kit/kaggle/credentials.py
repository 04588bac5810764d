"""Where the Kaggle client would find credentials, and keeping their secrets out of every output.

Nothing here reads a secret out to show it: `secrets` collects them only so `scrub` can mask them.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_HELP = (
    "no Kaggle credentials found: create an API token at https://www.kaggle.com/settings/api and "
    "save it as ~/.kaggle/kaggle.json ({\"username\": ..., \"key\": ...}, chmod 600), or set "
    "KAGGLE_USERNAME and KAGGLE_KEY, or put an access token in KAGGLE_API_TOKEN or ~/.kaggle/access_token")


def credential_source(home: str | os.PathLike | None = None) -> str | None:
    """Where the client would find credentials, without importing it; None when there are none."""
    home = Path(home or os.path.expanduser("~"))
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    config_dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else \
        [home / ".kaggle", Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    for folder in config_dirs:
        if (folder / "kaggle.json").is_file():
            return str(folder / "kaggle.json")
    for name in ("access_token", "access_token.txt", "credentials.json"):
        if (home / ".kaggle" / name).is_file():
            return str(home / ".kaggle" / name)
    return None


def kaggle_json(env: Mapping[str, str]) -> Path:
    """The kaggle.json the client reads, found as it finds it: in $KAGGLE_CONFIG_DIR, else in ~/.kaggle,
    else (on Linux, when there is no ~/.kaggle) in $XDG_CONFIG_HOME/kaggle."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    folder = home / ".kaggle"
    if sys.platform.startswith("linux") and not folder.exists():
        folder = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return folder / "kaggle.json"


def kaggle_json_problem(env: Mapping[str, str], need_key: bool = False) -> str | None:
    """Why the client could not use the kaggle.json it would read: unreadable, not JSON (the client
    ignores it, then reports no credentials at all), not a JSON object (the client fails with a
    TypeError), or, with need_key, no username and key in it. None when it is fine or there is none.
    Names the file, never a value in it. With need_key (the client found no credentials at all), a
    KAGGLE_CONFIG_DIR that is a file, not a folder, is named: the client looks for kaggle.json inside
    it. Without need_key it is no problem: credentials from the environment still work."""
    config_dir = env.get("KAGGLE_CONFIG_DIR")
    if need_key and config_dir and Path(config_dir).exists() and not Path(config_dir).is_dir():
        return (f"KAGGLE_CONFIG_DIR={config_dir} is a file, not a folder (the client reads kaggle.json inside "
                f"it); point it at the folder that holds kaggle.json, or unset it")
    path = kaggle_json(env)
    if not path.is_file():
        return None
    fix = 'save your API token there as {"username": ..., "key": ...}, or remove it and set KAGGLE_USERNAME ' \
          'and KAGGLE_KEY'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        return f"{path}: unreadable ({e.strerror})"
    except UnicodeDecodeError:
        return f"{path}: not valid JSON (not UTF-8 text); {fix}"
    except json.JSONDecodeError as e:
        return f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); {fix}"
    has_key = isinstance(data, dict) and all(isinstance(data.get(k), str) and data[k] for k in ("username", "key"))
    if not isinstance(data, dict) or (need_key and not has_key):
        return f"{path}: not a JSON object with username and key; {fix}"
    return None


def secrets(env: dict) -> list[str]:
    """Values that must never reach output, logs or the ledger."""
    found = [env.get("KAGGLE_KEY"), env.get("KAGGLE_API_TOKEN")]
    folders = [env.get("KAGGLE_CONFIG_DIR"), os.path.expanduser("~/.kaggle"), kaggle_json(env).parent]
    for folder in dict.fromkeys(filter(None, folders)):
        try:
            found.append(json.loads((Path(folder) / "kaggle.json").read_text()).get("key"))
        except (OSError, ValueError, AttributeError):
            pass
    return [s for s in found if s and len(s) >= 4]


def scrub(text: str, secret_values: list[str]) -> str:
    for s in secret_values:
        text = text.replace(s, "***")
    return text
