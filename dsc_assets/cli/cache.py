"""``dsc cache copy --from A --to B``: the call cache from one store into the other (a DuckDB file or a
postgresql:// URL, either way), so a deployment that moves to the shared PostgreSQL cache keeps every call it made,
and one that moves back keeps those made meanwhile. Keys already in the target are left alone: running it twice
copies nothing the second time."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsc_assets.cli.common import UsageError


def cmd_cache_copy(args: argparse.Namespace) -> int:
    from resources.pg_cache import copy_calls, is_postgres_url
    from resources.stores import open_cache

    if not is_postgres_url(args.source) and not Path(args.source).is_file():
        raise UsageError(f"--from {args.source}: no such cache file (a DuckDB file or a postgresql:// URL)")
    source, target = open_cache(args.source, read_only=True), open_cache(args.target)
    if source.path == target.path:
        raise UsageError(f"--from and --to are the same cache ({source.path})")
    read, copied = copy_calls(source, target)
    print(
        f"dsc cache copy: {read} calls read from {source.path}, {copied} copied to {target.path} "
        f"({read - copied} were there already); {target.count()} calls in {target.path}"
    )
    return 0


def add_cache(sub, verbose) -> None:
    """`dsc cache copy`."""
    cache = sub.add_parser("cache", help="the call cache: copy it between DuckDB and PostgreSQL", parents=[verbose])
    actions = cache.add_subparsers(dest="action", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy every call from one cache into another (keys already there are kept)",
        parents=[verbose],
        description=__doc__,
    )
    copy.add_argument("--from", dest="source", required=True, help="a DuckDB cache file or a postgresql:// URL")
    copy.add_argument("--to", dest="target", required=True, help="a DuckDB cache file or a postgresql:// URL")
    copy.set_defaults(func=cmd_cache_copy)
