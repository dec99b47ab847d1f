"""Progress bars' one switch that no call site overrides: ``TQDM_DISABLE`` (nothing here imports torch)."""

from __future__ import annotations

import os


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` is set to a true value. tqdm reads it only as a default, so every bar given an
    explicit ``disable=`` ignored it; every bar of the project asks this function as well."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
