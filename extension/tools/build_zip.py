"""Build the extension archives (run by `make extension`; stdlib only).

    python extension/tools/build_zip.py [--out dist]

Writes
  dist/vibescope-extension.zip        unzip and "Load unpacked" (keeps the manifest `key`, so the
                                      extension id stays jamlkphlcjmegmfpkeonmglpoklggpcb)
  dist/vibescope-extension-store.zip  for the Chrome Web Store upload (no `key`: the store assigns
                                      the id and refuses packages that carry one)
Both are reproducible (sorted entries, fixed timestamps). Fails if the manifest names a file that
does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

EXT = Path(__file__).resolve().parents[1]
EXCLUDE_DIRS = {"tools", "__pycache__", ".git"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def files() -> list[Path]:
    return sorted(
        p
        for p in EXT.rglob("*")
        if p.is_file() and not (set(p.relative_to(EXT).parts[:-1]) & EXCLUDE_DIRS) and not p.name.startswith(".")
    )


def referenced(manifest: dict) -> set[str]:
    refs = {manifest["background"]["service_worker"], manifest["options_page"]}
    refs |= set(manifest["icons"].values()) | set(manifest["action"]["default_icon"].values())
    for cs in manifest.get("content_scripts", []):
        refs |= set(cs.get("js", [])) | set(cs.get("css", []))
    return refs


def write(path: Path, manifest: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in files():
            rel = f.relative_to(EXT).as_posix()
            info = zipfile.ZipInfo(rel, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = (
                (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
                if rel == "manifest.json"
                else f.read_bytes()
            )
            z.writestr(info, data)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(EXT.parent / "dist"))
    args = ap.parse_args(argv)
    manifest = json.loads((EXT / "manifest.json").read_text(encoding="utf-8"))
    missing = sorted(r for r in referenced(manifest) if not (EXT / r).is_file())
    if missing:
        print(f"manifest.json names missing files: {', '.join(missing)}", file=sys.stderr)
        return 1
    out = Path(args.out)
    write(out / "vibescope-extension.zip", manifest)
    store = {k: v for k, v in manifest.items() if k != "key"}
    write(out / "vibescope-extension-store.zip", store)
    print(
        f"wrote {out / 'vibescope-extension.zip'} and {out / 'vibescope-extension-store.zip'} "
        f"({len(files())} files, version {manifest['version']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
