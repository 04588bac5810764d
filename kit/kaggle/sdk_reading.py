"""kagglesdk made to read what a Kaggle-like server may send (a zone after fractional seconds, an enum
as its number, a status it does not know) and every request bounded in time; the worker applies both."""
from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta

import requests

_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")


def iso_utc(text) -> datetime:
    """An ISO 8601 time as kagglesdk's naive UTC datetime, its zone applied. kagglesdk's own reader drops
    a zone that follows fractional seconds (`...21.259-05:00` read as 21:11 UTC, five hours early), so a
    cut-off send dated so was taken for one before it was sent, and sent again."""
    if not isinstance(text, str):   # a number (epoch seconds?) or an object: no date (probe 35: AttributeError)
        return None                 # type: ignore[return-value]
    found = _STAMP.fullmatch(text.strip())
    if not found:               # a form of its own (a date alone) as kagglesdk reads it; none: no date
        try:
            return datetime.fromisoformat(text.strip().rstrip("Z"))
        except ValueError:
            return None         # type: ignore[return-value]  # one bad date must not fail the whole list
    base, fraction, zone = found.groups()
    when = datetime.fromisoformat(base + (fraction or "")[:7])        # microseconds at most
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        when -= sign * timedelta(hours=hours, minutes=minutes)
    return when


def read_as_kaggle_might_send() -> None:
    """kagglesdk's readers, made to take what a Kaggle-like server may send: a zone after fractional
    seconds (iso_utc), an enum sent as its number, and a submission status it does not know, which
    failed the whole list (`KeyError: 'RUNNING'`) and with it every wait and `kit scores`: one not
    known is not scored yet, so PENDING. A kernel status it does not know stays its text (the wait
    for kernels says so and ends)."""
    # optional: kagglesdk is imported only when talking to Kaggle
    from kagglesdk.competitions.types.submission_status import SubmissionStatus
    from kagglesdk.kaggle_object import DateTimeSerializer, EnumSerializer
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    DateTimeSerializer._from_str = staticmethod(iso_utc)
    named = EnumSerializer._from_str

    def enum_from(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        try:
            return named(cls, value if isinstance(value, str) else str(value))
        except KeyError:
            if cls is SubmissionStatus:
                return SubmissionStatus.PENDING
            if cls is KernelWorkerStatus:       # kept as sent: kit.kaggle.kernel_ops reports it and ends
                return str(value).upper()
            raise

    EnumSerializer._from_str = staticmethod(enum_from)
    bounded_requests()


HTTP_TIMEOUT = (30.0, 300.0)    # seconds to connect, and between bytes of an answer, for every call kit makes


def bounded_requests() -> None:
    """Every request of this worker with a timeout: kagglesdk sets none, and a server that never answered
    a status poll held `kit recipe run --launcher kaggle` without a word until killed (probe 37); a
    timed-out call is retried like a dropped connection (kit.kaggle.retrying)."""
    real = requests.Session.send            # what kagglesdk calls, and Session.request too

    @functools.wraps(real)
    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = HTTP_TIMEOUT
        return real(self, request, **kwargs)

    requests.Session.send = send            # type: ignore[method-assign]
