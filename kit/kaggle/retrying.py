"""Calls to Kaggle through the official client, retried: 429/5xx and connection errors with capped
exponential backoff (honouring Retry-After), and one clear line for what cannot be retried."""
from __future__ import annotations

import email.utils
import math
import os
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.kaggle.client import RETRY_STATUSES, backoff, max_retry_after, retries


class RetriesSpent(KitError):
    """A call still failing once its retries are spent (429/5xx, no connection): an outage, which a
    wait may sit out, unlike a refusal."""


def retrying(what: str, fn, log):
    """Call fn, retrying 429/5xx and connection errors with capped exponential backoff (RetriesSpent
    when they are spent)."""
    attempts = retries()
    for attempt in range(attempts + 1):
        try:
            return fn()
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status not in RETRY_STATUSES:
                raise KitError(http_message(what, status, e, attempt)) from None
            if attempt == attempts:
                raise RetriesSpent(http_message(what, status, e, attempt)) from None
            delay = retry_after(e.response) or backoff() * 2 ** attempt
            log(f"Kaggle answered HTTP {status} to {what}; retry {attempt + 1}/{attempts} in {delay:.2g}s")
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            if attempt == attempts:
                host = getattr(getattr(e, "request", None), "url", None) or "Kaggle"
                raise RetriesSpent(f"{what}: cannot reach {_host(host)} after {attempts + 1} attempts "
                               f"(connection refused or network down)") from None
            delay = backoff() * 2 ** attempt
            log(f"{what}: connection failed; retry {attempt + 1}/{attempts} in {delay:.2g}s")
        time.sleep(delay)


def _host(url: str) -> str:
    proxy = os.environ.get("HTTP_PROXY") if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else None
    return proxy or urlsplit(url).netloc or url


def retry_after(response) -> float | None:
    """A server's Retry-After, in seconds or as an HTTP date (both are HTTP's), bounded by
    KIT_KAGGLE_MAX_RETRY_AFTER; None when there is none or it cannot be read."""
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), max_retry_after()) if math.isfinite(seconds) else None


def server_says(response) -> str:
    """The reason a server gave in its answer's body ({"message"} or {"error"} JSON, else its text), on
    one line and short; '' when it gave none."""
    if response is None:
        return ""
    try:
        body = response.json()
        text = body.get("message") or body.get("error") or "" if isinstance(body, dict) else ""
    except ValueError:
        text = response.text or ""
    text = " ".join(str(text).split())
    return text[:200] if "<html" not in text.lower() else ""


def http_message(what: str, status, e, attempt: int) -> str:
    says = server_says(getattr(e, "response", None))
    detail = str(e).split(" for url:")[0]
    if says and says.removesuffix("...")[:100] not in " ".join(detail.split()):    # a reason said once
        detail = f"{detail}: {says}" if detail else says
    if status == 401:
        return (f"Kaggle refused the credentials (HTTP 401) for {what}: check ~/.kaggle/kaggle.json or "
                f"KAGGLE_USERNAME/KAGGLE_KEY (or KAGGLE_API_TOKEN); a regenerated token replaces the old one")
    if status == 403:
        reason = f"HTTP 403: {says}" if says else "HTTP 403"
        if "Kernel" in what or what.startswith("download of "):     # not a competition's: no rules to accept
            return f"Kaggle denied {what} ({reason})"
        return (f"Kaggle denied {what} ({reason}); if it is the rules, accept them on the competition's Kaggle "
                f"page (Rules tab) with the account of these credentials")
    if status == 404:
        return (f"{what}: competition not found (HTTP 404): check the competition's name (--competition; "
                f"without it, the one `kit data download` fetched the data from, else {DEFAULT_COMPETITION}) "
                "and that your Kaggle account has joined it")
    tries = f" after {attempt + 1} attempts" if attempt else ""
    return f"Kaggle answered HTTP {status} to {what}{tries}: {detail}"
