"""The media clock the whole analyzer shares.

Audio is analysed as mono float32 at ``SAMPLE_RATE``; media time is cut into ticks of
``TICK_SECONDS`` (``TICK_SAMPLES`` samples). One tick is one overlay event and one frame of the
models that run per tick (TAGF's features, the separator's music probability).
"""

SAMPLE_RATE = 16000  # Hz
TICK_SECONDS = 0.1
TICK_SAMPLES = 1600  # SAMPLE_RATE * TICK_SECONDS
