"""The ``nsm`` command: ``nsm train``, ``nsm reproduce``, ``nsm analyze``, ``nsm evaluate``,
``nsm online``, ``nsm summarize``, ``nsm fetch``, ``nsm models``.

Run ``nsm COMMAND --help`` for the options. Every option of ``nsm train`` overrides one
field of :class:`nsm.training.config.TrainConfig`; the resolved configuration is saved in the run
directory.

:func:`main` parses the command line and runs the command; a command's error is one line on
stderr and exit status 2, Ctrl-C exit status 130. One module per question:

- :mod:`.parser`: what the command accepts (:func:`build_parser`);
- :mod:`.train`: how ``nsm train`` makes a run of its options, or resumes one;
- :mod:`.reproduce`: how ``nsm reproduce`` makes a table's sweep of its options;
- :mod:`.reports`: ``nsm evaluate``, ``nsm analyze``, ``nsm online``, ``nsm summarize``;
- :mod:`.resources`: ``nsm fetch`` and ``nsm models``;
- :mod:`.process`: the denormal mode set before torch starts, the line Ctrl-C leaves.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .parser import build_parser
from .process import _interrupted, _set_denormal_mode
from .reports import _analyze, _evaluate, _online, _summarize
from .reproduce import _reproduce
from .resources import _fetch, _models
from .train import _resume_config, _train  # noqa: F401 (_resume_config: its old home, for older imports)

__all__ = ["main", "build_parser"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = {
        "train": _train,
        "fetch": _fetch,
        "models": _models,
        "reproduce": _reproduce,
        "analyze": _analyze,
        "evaluate": _evaluate,
        "online": _online,
        "summarize": _summarize,
    }[args.command]
    try:
        if args.command in ("train", "reproduce"):
            _set_denormal_mode(args)  # before torch starts its threads
        return handler(args)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line that says what was kept and how to go on
        print(f"nsm {args.command}: {_interrupted(exc, args)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        print(f"nsm {args.command}: error: {exc}", file=sys.stderr)
        return 2
