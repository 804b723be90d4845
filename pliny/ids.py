"""Session ids given by a unique prefix, as git takes commit ids."""

from __future__ import annotations

from pliny.errors import UsageError


def unique_prefix(given: str, known: list[str]) -> str | None:
    """The one id in ``known`` starting with ``given``; None if none; ambiguous is a UsageError."""
    hits = [k for k in known if k.startswith(given)] if given else []
    if len(hits) > 1:
        more = f" and {len(hits) - 10} more" if len(hits) > 10 else ""
        raise UsageError(f"ambiguous session id {given!r}: matches {', '.join(hits[:10])}{more}")
    return hits[0] if hits else None
