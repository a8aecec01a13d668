"""``python -m kubeloop.runtime <ingest|train|serve|fetch|score> [args...]``.

Each command is ``module:function`` taking the remaining arguments and returning the exit code. Modules
are imported only when their command runs, so the server image needs none of the trainer's libraries.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": "kubeloop.runtime.serve:main",
    "ingest": "kubeloop.runtime.ingest:main",
    "train": "kubeloop.runtime.train:main",
    "fetch": "kubeloop.runtime.fetch:main",
    "score": "kubeloop.runtime.score:main",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m kubeloop.runtime {{{','.join(COMMANDS)}}} [args...]", file=sys.stderr)
        return 2
    module_name, function = COMMANDS[args[0]].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(f"command {args[0]!r} is not available: {module_name} is not installed here", file=sys.stderr)
        return 2
    return int(getattr(module, function)(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
