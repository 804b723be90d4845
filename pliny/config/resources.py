"""Where the built-in frameworks and configs live.

In the repo (and an editable install) they are the top-level ``frameworks/``
and ``configs/`` folders; a wheel carries copies under ``pliny/_data/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def _data_root(kind: str) -> Path:
    package = Path(__file__).resolve().parents[1]  # pliny/
    packaged = package / "_data" / kind
    if packaged.is_dir():
        return packaged
    return package.parent / kind


def frameworks_dir() -> Path:
    return _data_root("frameworks")


def config_path(name: str) -> Path:
    return _data_root("configs") / name
