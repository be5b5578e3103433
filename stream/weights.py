"""Where the project's model files are: one lookup for every model and card.

``$VIBESCOPE_MODELS`` (a folder holding ``separator.pt``, ``tagf.pt`` and the cards) overrides the
folder the distribution ships, so a host can run other weights without touching the install.
"""

from __future__ import annotations

import os
from pathlib import Path

from vibescope import data_dir


def models_dir() -> Path:
    env = os.environ.get("VIBESCOPE_MODELS")
    return Path(env).expanduser() if env else data_dir("models")


def weights_path(filename: str) -> Path:
    """``models_dir() / filename``, e.g. ``weights_path("separator.pt")``."""
    return models_dir() / filename


def card_path(name: str) -> Path:
    """The card ``<name>.md``: from ``$VIBESCOPE_MODELS`` when that folder has one, else the shipped one."""
    override = models_dir() / f"{name}.md"
    return override if override.is_file() else data_dir("models") / f"{name}.md"
