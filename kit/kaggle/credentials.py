"""Where the Kaggle client would find credentials, and keeping their secrets out of every output.

Nothing here reads a secret out to show it: `secrets` collects them only so `scrub` can mask them.
"""
from __future__ import annotations

import json
import os
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


def secrets(env: dict) -> list[str]:
    """Values that must never reach output, logs or the ledger."""
    found = [env.get("KAGGLE_KEY"), env.get("KAGGLE_API_TOKEN")]
    for folder in filter(None, [env.get("KAGGLE_CONFIG_DIR"), os.path.expanduser("~/.kaggle")]):
        try:
            found.append(json.loads((Path(folder) / "kaggle.json").read_text()).get("key"))
        except (OSError, ValueError, AttributeError):
            pass
    return [s for s in found if s and len(s) >= 4]


def scrub(text: str, secret_values: list[str]) -> str:
    for s in secret_values:
        text = text.replace(s, "***")
    return text
