"""Kaggle through the official client: download the data, submit with retries, poll, keep the ledger.

One module a job: credentials (where they are, masking them), client (the worker subprocess and
its timings), worker (the side that imports `kaggle`) and kernel_ops (its kernel operations), ledger,
pending (rows the ledger could not take yet), submissions (submit, refresh), downloads, rehearsal (a
recipe's last step), server (the local stand-in of Kaggle's API) with server_competitions and
server_kernels (its two services).
"""
from kit import DEFAULT_COMPETITION
from kit.kaggle.client import KAGGLE, RETRY_STATUSES, STAND_IN, backoff, call, max_retry_after, poll_interval, retries
from kit.kaggle.credentials import CREDENTIALS_HELP, credential_source
from kit.kaggle.downloads import download, extract_zip, find_data_dir
from kit.kaggle.ledger import (
    LEDGER_BACKUPS,
    LEDGER_COLUMNS,
    append_ledger,
    read_ledger,
    score_table,
    update_ledger,
)
from kit.kaggle.notes import find_submitted
from kit.kaggle.pending import merge_pending
from kit.kaggle.refresh import refresh_ledger
from kit.kaggle.rehearsal import check_recipe_submissions, recipe_competition, recipe_submit
from kit.kaggle.submissions import submit

__all__ = ["CREDENTIALS_HELP", "DEFAULT_COMPETITION", "KAGGLE", "LEDGER_BACKUPS", "LEDGER_COLUMNS", "RETRY_STATUSES",
           "STAND_IN", "append_ledger", "backoff", "call", "check_recipe_submissions", "credential_source",
           "download", "extract_zip", "find_data_dir", "find_submitted", "max_retry_after", "merge_pending",
           "poll_interval", "read_ledger", "recipe_competition", "recipe_submit", "refresh_ledger", "retries",
           "score_table", "submit", "update_ledger"]
