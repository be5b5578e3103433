"""Real recordings from Debian packages: fetched with ``apt-get download`` and unpacked with
``dpkg -x`` (no root, nothing installed system-wide) into the cache (``vibescope.stream.cache_dir``).

Some packages are **reserved for evaluation** (``RESERVED_FOR_EVALUATION``): test sets are built
from them so that measured results come from sources no model was trained or tuned on. Fetching
one needs ``allow_reserved=True``, which only the builders of test sets pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from vibescope.stream import cache_dir

RESERVED_FOR_EVALUATION = frozenset(
    {
        "singularity-music",
        "planetblupi-music-ogg",
        "planetblupi-music-midi",
        "asc-music",
        "hyperrogue-music",
        "fillets-ng-data-nl",
        "codec2-examples",
        "extremetuxracer-data",
        "xmoto-data",
        "lincity-ng-data",
        "frozen-bubble-data",
        "pingus-data",
        "chromium-bsu-data",
        "asterisk-core-sounds-en-wav",
        "asterisk-core-sounds-fr-wav",
    }
)


class DataError(RuntimeError):
    """A user-facing failure while fetching or building data (bad arguments, apt failure)."""


def fetch_package(name: str, allow_reserved: bool = False) -> Path:
    """Download (once) and unpack (once) a Debian package; returns the unpacked root."""
    if name in RESERVED_FOR_EVALUATION and not allow_reserved:
        raise DataError(f"{name} is reserved for evaluation; only test builds may fetch it")
    root = cache_dir() / "pkgs" / name
    if (root / ".unpacked").exists():
        return root
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        proc = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not found:
            raise DataError(f"apt-get download {name} failed: {proc.stderr.strip()[-400:]}")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    proc = subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"dpkg -x {found[-1].name} failed: {proc.stderr.strip()[-400:]}")
    (root / ".unpacked").touch()
    return root


def run_env(packages: Iterable[str]) -> dict[str, str]:
    """Environment to run a binary from unpacked packages: their library dirs on LD_LIBRARY_PATH."""
    dirs = []
    for name in packages:
        root = fetch_package(name)
        for d in sorted(root.glob("usr/lib/*-linux-gnu")) + sorted(root.glob("usr/lib/*-linux-gnu/pulseaudio")):
            dirs.append(str(d))
    return dict(os.environ, LD_LIBRARY_PATH=":".join(dirs + [os.environ.get("LD_LIBRARY_PATH", "")]))
