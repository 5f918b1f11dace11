"""Passwords never leave the config: one helper masks them in any text that is shown or stored.

A storage URL such as ``postgresql://user:pw@host/db`` or ``redis://:pw@host:6379/0`` reaches
messages, logs, the study note and report files; :func:`redact` replaces every URL password
(and a ``password=`` query or key-value option) with ``***`` wherever it appears in a string.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# scheme://user:password@  (the user may be empty: redis://:pw@host)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?P<at>@)")
# ?password=pw / &password=pw / password=pw (libpq key-value strings)
_OPTION_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>[^\s&'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL password (and ``password=...`` option) replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<at>", str(text))
    return _OPTION_PASSWORD.sub(r"\g<head>***", text)
