"""Model cards: what the server tells clients about each component, read from ``models/*.md``.

Every card starts with a front matter block of ``key: value`` lines between two ``---`` lines::

    ---
    id: vibescope-sep-v15
    field: music
    summary: causal BGM/OST separator ... (one sentence, shown to users beside the values)
    validated: false
    ---

``validated`` says whether the component was checked against human judgements (``true``), not
(``false``), or is a signal measure that has nothing to validate (``null``). The card text, and any
measured number in it, lives in the card only; code reads it from there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from vibescope.stream.weights import card_path

_SCALARS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class Card:
    name: str  # the card's file name without .md
    id: str  # the model id it describes (a checkpoint may carry its own)
    summary: str
    validated: bool | None
    path: Path

    def info(self, model_id: str | None = None) -> dict[str, object]:
        """The ``{id, card, validated}`` entry of ``welcome["models"]``."""
        return {"id": model_id or self.id, "card": self.summary, "validated": self.validated}


def parse_front_matter(text: str) -> dict[str, object]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError("a model card starts with a '---' front matter block")
    out: dict[str, object] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return out
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"front matter line without 'key: value': {line!r}")
        value = value.strip()
        out[key.strip()] = _SCALARS.get(value, value)
    raise ValueError("the front matter block of a model card is not closed with '---'")


_cache: dict[Path, Card] = {}
_lock = threading.Lock()


def card(name: str) -> Card:
    """The card ``models/<name>.md`` (read once per process)."""
    path = card_path(name).resolve()
    with _lock:
        if path not in _cache:
            meta = parse_front_matter(path.read_text(encoding="utf-8"))
            for key in ("id", "summary", "validated"):
                if key not in meta:
                    raise ValueError(f"{path}: front matter has no {key!r}")
            _cache[path] = Card(name, str(meta["id"]), str(meta["summary"]), meta["validated"], path)  # type: ignore[arg-type]
        return _cache[path]
