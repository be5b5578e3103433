"""`vibescope` command line: one subcommand per task, each with its own --help.

Subcommands live in server/commands/*.py; each module has ``register(groups)`` where ``groups``
maps "root" to the top-level subparsers and "data", "train", "eval" to the subparsers of those
command groups. A subcommand sets ``func=handler(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "vibescope.server.commands.stream",
    "vibescope.server.commands.separator",
    "vibescope.server.commands.tagf",
    "vibescope.server.commands.selfcheck",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vibescope", description="Live valence/arousal and BGM/OST separation for streamed media."
    )
    root = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = {"root": root}
    for name, help_ in (("data", "build data sets"), ("train", "train a model"), ("eval", "evaluate a model")):
        p = root.add_parser(name, help=help_, description=help_)
        groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="WHAT", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `vibescope analyze x.mp4 | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
