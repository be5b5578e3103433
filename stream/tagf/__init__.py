"""Valence/arousal: TAGF (time-aware gated fusion) over face-expression and voice features.

One concern per file: ``model`` (TAGF, both gates, baselines), ``streamer`` (TagfStreamer,
selfcheck), ``features`` (per-frame vectors, audio front-end), ``expression`` (ExpressionStage, FER),
``teacher`` (cited cue → V/A mapping), ``synthetic`` (controlled benchmark data), ``affwild2``
(loader), ``train``, ``evaluate``, ``stage`` (TagfStage), ``plot`` (plot_timeline).
"""
