"""How ``nsm reproduce`` turns its options into a table's sweep: ``--list``, the table, its
seeds, the subsets of its models and datasets, the training options it passes on to every run,
``--worker`` and ``--steal-after``; then whether it trains the runs
(:func:`nsm.studies.reproduce.run_table`), only writes the table from the finished ones
(``--table-only``) or only says where each run stands (``--status``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .parser import _REPRODUCE_FIELDS, _int_list, _resolve_compile


def _reproduce(args) -> int:
    from ..studies.catalog import TABLES
    from ..studies.reproduce import (
        _check_steal_after,
        format_status,
        rebuild_table,
        run_table,
        table_status,
    )
    from ..studies.tables import format_markdown

    if args.list:
        for name in TABLES.names():
            t = TABLES.get(name)
            print(f"{name}: {t.description}\n    models: {', '.join(t.models)}\n    datasets: {', '.join(t.datasets)}")
        return 0
    if not args.table:
        raise ValueError(
            f"name the table to reproduce: one of {', '.join(TABLES.names())} (nsm reproduce --list describes them)"
        )
    table = TABLES.get(args.table)
    _resolve_compile(args)
    if args.seed_list is not None and args.seeds is not None:
        raise ValueError("give --seeds or --seed-list, not both")
    if args.seed_list is not None:
        seeds = _int_list(args.seed_list, "--seed-list")
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"--seed-list must name distinct non-negative ints, e.g. 0,3,7; got {args.seed_list!r}")
    else:
        n = 2 if args.seeds is None else args.seeds
        if n < 1:
            raise ValueError(f"--seeds must be >= 1, got {n}")
        seeds = list(range(n))
    if args.steal_after is not None:
        _check_steal_after(args.steal_after, "--steal-after")
    overrides = {f: getattr(args, f) for f in _REPRODUCE_FIELDS if getattr(args, f) is not None}
    overrides["progress"] = not args.no_progress
    worker = None
    if args.worker is not None:
        parts = args.worker.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
            raise ValueError(f"--worker must read K/N with 1 <= K <= N (e.g. 1/3), got {args.worker!r}")
        worker = (int(parts[0]), int(parts[1]))
    out = Path(args.out or f"reproduce/{table.name}")
    common = dict(
        out=out,
        seeds=seeds,
        models=_name_list(args.models, "--models"),
        datasets=_name_list(args.datasets, "--datasets"),
        overrides=overrides,
        steal_after=args.steal_after,
    )
    if args.status and args.table_only:
        raise ValueError("give --status or --table-only, not both")
    if args.status or args.table_only:  # they train nothing: a worker's options would be ignored
        mode = "--status" if args.status else "--table-only"
        given = [o for o, v in (("--worker", args.worker), ("--steal-after", args.steal_after)) if v is not None]
        if given and not (args.status and given == ["--steal-after"]):  # --status reads claims with it
            raise ValueError(f"{mode} trains nothing: {' and '.join(given)} would mean nothing with it")
    if args.status:
        status = format_status(table_status(table, **common))  # refuses a bad request before printing anything
        print(f"nsm reproduce {table.name} in {out}:\n")
        print(status)
        return 0
    title = table.title
    # the command that trains the table, whichever of the two wrote it
    command = "nsm " + " ".join(str(a) for a in args.argv if a != "--table-only")
    if args.table_only:
        del common["steal_after"]
        rows = rebuild_table(table, title=title, command=command, **common)
    else:
        rows = run_table(table, worker=worker, title=title, command=command, **common)
    print(format_markdown(rows, title, command))
    print(f"wrote {out / 'table.md'} and {out / 'table.csv'}")
    return 0


def _name_list(text: Optional[str], flag: str) -> Optional[list[str]]:
    """The names of a comma-separated option; None when it was not given (all of them)."""
    if text is None:
        return None
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:  # an empty shell variable must not select the whole table
        raise ValueError(f"{flag} names nothing (got {text!r}); leave {flag} out for all of the table's")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{flag} names {', '.join(repeated)} more than once (got {text!r}); name each once")
    return names
