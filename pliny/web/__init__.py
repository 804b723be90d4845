"""``pliny serve``: a local web view of a workspace's sessions.

``create_app`` builds the Starlette app; ``pliny.cli.serve`` runs it under
uvicorn. Import this package only when serving: Starlette is an optional
dependency (the ``web`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pliny.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from pliny.web.app import create_app

        return create_app
    raise AttributeError(name)
