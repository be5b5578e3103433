"""vibescope: live valence/arousal and BGM/OST separation for streamed media.

``vibescope.stream`` computes (media in, results out), ``vibescope.server`` connects (the
WebSocket service, state stores, the CLI). Their folders are ``stream/`` and ``server/`` at the
top of the source tree, mapped into this package by pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """A folder shipped beside the code: ``"models"`` (weights and cards) or ``"extension"``.

    Installed from a wheel it lies inside this package; in a source checkout (an editable
    install) it is the folder of that name at the top of the tree."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"vibescope's {name}/ folder is missing from this installation")
