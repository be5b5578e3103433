"""Prometheus text-format metrics for /metrics (exposition format 0.0.4), kept in-process."""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines, acc = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            acc += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {acc}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.sum}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    """Every number /metrics shows; the server updates it, ``render()`` prints it."""

    def __init__(self) -> None:
        self.sessions_active = 0
        self.sessions_total: dict[str, int] = defaultdict(int)  # outcome: new | resumed
        self.frames_total: dict[str, int] = defaultdict(int)  # kind
        self.bytes_total: dict[str, int] = defaultdict(int)  # kind
        self.duplicates_total = 0
        self.events_total = 0
        self.errors_total: dict[str, int] = defaultdict(int)  # code
        self.dropped_video_total = 0
        self.refusals_total: dict[str, int] = defaultdict(int)  # reason: origin | peer_limit | ...
        self.rollbacks_total = 0  # resumes that found the store behind the client's acks
        self.latency = Histogram(LATENCY_BUCKETS)  # frame arrival -> its events sent, seconds
        self.state_size = Histogram(SIZE_BUCKETS)  # bytes stored per session, observed at each save
        self.state_bytes: dict[str, int] = {}  # live session -> bytes stored
        self.session_ttl_s = 0
        self.analysis = None  # the server's AnalysisPool (rounds, requests)

    def render(self, store_kind: str) -> str:
        out: list[str] = []

        def block(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value}" for labels, value in samples)

        block(
            "vibescope_sessions_active",
            "gauge",
            "Sessions with a live connection on this process.",
            [("", self.sessions_active)],
        )
        block(
            "vibescope_sessions_total",
            "counter",
            "Connections that started or resumed a session.",
            [(f'{{outcome="{k}"}}', v) for k, v in sorted(self.sessions_total.items())] or [('{outcome="new"}', 0)],
        )
        block(
            "vibescope_frames_total",
            "counter",
            "Media frames accepted, by kind (duplicates excluded).",
            [(f'{{kind="{k}"}}', self.frames_total.get(k, 0)) for k in ("audio", "video", "container")],
        )
        block(
            "vibescope_bytes_total",
            "counter",
            "Media payload bytes accepted, by kind.",
            [(f'{{kind="{k}"}}', self.bytes_total.get(k, 0)) for k in ("audio", "video", "container")],
        )
        block(
            "vibescope_duplicate_frames_total",
            "counter",
            "Resent frames dropped as duplicates.",
            [("", self.duplicates_total)],
        )
        block("vibescope_events_total", "counter", "Overlay events sent.", [("", self.events_total)])
        block(
            "vibescope_errors_total",
            "counter",
            "Error messages sent, by code.",
            [(f'{{code="{k}"}}', v) for k, v in sorted(self.errors_total.items())] or [('{code="none"}', 0)],
        )
        block(
            "vibescope_refusals_total",
            "counter",
            "Connections or hellos refused before a session, by reason.",
            [(f'{{reason="{k}"}}', v) for k, v in sorted(self.refusals_total.items())] or [('{reason="none"}', 0)],
        )
        block(
            "vibescope_store_rollbacks_total",
            "counter",
            "Resumes that found the stored session behind what the client saw acknowledged.",
            [("", self.rollbacks_total)],
        )
        block(
            "vibescope_dropped_video_frames_total",
            "counter",
            "Video frames skipped because analysis fell behind.",
            [("", self.dropped_video_total)],
        )
        out.append("# HELP vibescope_processing_latency_seconds Frame arrival to its overlay events sent.")
        out.append("# TYPE vibescope_processing_latency_seconds histogram")
        out.extend(self.latency.render("vibescope_processing_latency_seconds"))
        out.append(
            "# HELP vibescope_session_state_bytes Bytes stored per session (state + event history), at each save."
        )
        out.append("# TYPE vibescope_session_state_bytes histogram")
        out.extend(self.state_size.render("vibescope_session_state_bytes"))
        sizes = list(self.state_bytes.values())
        block(
            "vibescope_live_state_bytes",
            "gauge",
            "Bytes stored for the sessions live on this process.",
            [('{stat="sum"}', sum(sizes)), ('{stat="max"}', max(sizes, default=0))],
        )
        block(
            "vibescope_session_ttl_seconds",
            "gauge",
            "Seconds a session's state is kept after its last write.",
            [(f'{{store="{store_kind}"}}', self.session_ttl_s)],
        )
        rounds, requests = (self.analysis.rounds, self.analysis.requests) if self.analysis is not None else (0, 0)
        block(
            "vibescope_analysis_rounds_total",
            "counter",
            "Lock-step analysis rounds (each feeds every session with frames waiting).",
            [("", rounds)],
        )
        block(
            "vibescope_analysis_requests_total",
            "counter",
            "Sessions fed in those rounds; divided by the rounds: sessions analysed together per round.",
            [("", requests)],
        )
        return "\n".join(out) + "\n"


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (for tests, benchmarks and scripts)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
