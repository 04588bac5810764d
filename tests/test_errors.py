"""One-line errors quote the first line of what went wrong, cut at a word."""
from __future__ import annotations

from kit.errors import first_line


def test_a_long_message_is_cut_at_a_word_not_in_one():
    torch_says = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                              "If you meant to load something else please do\nsecond line")
    cut = first_line(torch_says, 100)
    assert cut == ("PytorchStreamReader failed reading zip archive: failed finding central directory. If you "
                   "meant to ...")
    assert first_line(ValueError("short\nmore")) == "short" and first_line(ValueError("")) == "no detail"
