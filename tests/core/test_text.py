from __future__ import annotations

import pytest

from tradetree.core.text import as_opt_text, as_text


@pytest.mark.parametrize(("raw", "text"), [(b"abc", "abc"), ("abc", "abc"), (bytearray(b"x:y"), "x:y"),
                                           ("é".encode(), "é"), (12, "12")])
def test_as_text_reads_bytes_and_str_alike(raw, text):
    assert as_text(raw) == text


def test_as_opt_text_keeps_none():
    assert as_opt_text(None) is None and as_opt_text(b"1") == "1"


def test_non_utf8_bytes_raise():
    with pytest.raises(UnicodeDecodeError):
        as_text(b"\xff")
