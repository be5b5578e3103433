"""The stage chains a session can run, by name (the name is saved with the session)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vibescope.stream.stage import Stage


def _signal_pipeline() -> list[Stage]:
    from vibescope.stream.signal import SignalStage

    return [SignalStage()]


def _full_pipeline() -> list[Stage]:
    # imported here: the model stages load their weights when first built
    from vibescope.stream.separator.stage import SeparatorStage
    from vibescope.stream.signal import SignalStage
    from vibescope.stream.tagf.expression import ExpressionStage
    from vibescope.stream.tagf.stage import TagfStage

    return [SignalStage(), ExpressionStage(), SeparatorStage(), TagfStage()]


PIPELINES: dict[str, Callable[[], list[Stage]]] = {
    "default": _full_pipeline,  # speech, loudness, face, expression, music/OST, valence/arousal
    "base": _signal_pipeline,  # the signal measures only (no trained models of ours)
}


def build(name: str) -> list[Stage]:
    """A fresh stage chain of the pipeline ``name``."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    return PIPELINES[name]()


def model_info(pipeline: str = "default") -> dict[str, dict[str, Any]]:
    """field -> {id, card, validated} for every component of a pipeline (for ``welcome``)."""
    info: dict[str, dict[str, Any]] = {}
    for stage in build(pipeline):
        if hasattr(stage, "model_info"):
            info.update(stage.model_info())
    return info
