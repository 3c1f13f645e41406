"""Human durations for the CLI, pure: ``500ms``, ``30s``, ``5m``, ``1h30m``, ``2d`` -> milliseconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration_ms(text: str) -> int:
    """Parse a duration; a bare number is seconds.

    Raises:
        ValueError: the text is not a positive duration.
    """
    t = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        ms = float(t) * 1000
    else:
        pos, ms = 0, 0.0
        for m in _PART.finditer(t):
            if m.start() != pos:
                break
            ms += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise ValueError(f"{text!r} is not a duration (examples: 500ms, 30s, 5m, 1h30m, 2d)")
    if ms <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return int(round(ms))
