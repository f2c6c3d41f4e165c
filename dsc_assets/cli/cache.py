"""``dsc cache copy --from A --to B``: the call cache from one store into the other (a DuckDB file, a
postgresql:// URL or a ``.parquet`` file, any way round), so a deployment that moves to the shared PostgreSQL cache
keeps every call it made, one that moves back keeps those made meanwhile, and a home that will not survive (a study
run across sessions on machines that start empty) leaves its calls in a file that can be committed and copied back.
Keys already in the target are left alone: running it twice copies nothing the second time."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsc_assets.cli.common import UsageError


def cmd_cache_copy(args: argparse.Namespace) -> int:
    from resources.cache_files import ParquetCalls, is_parquet_path
    from resources.pg_cache import copy_calls, is_postgres_url
    from resources.stores import open_cache

    def store(location: str, read_only: bool):
        return ParquetCalls(location) if is_parquet_path(location) else open_cache(location, read_only=read_only)

    if not is_postgres_url(args.source) and not Path(args.source).is_file():
        raise UsageError(f"--from {args.source}: no such cache file (a DuckDB or Parquet file, or a postgresql:// URL)")
    source, target = store(args.source, read_only=True), store(args.target, read_only=False)
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
    cache = sub.add_parser(
        "cache", help="the call cache: copy it between DuckDB, PostgreSQL and Parquet files", parents=[verbose]
    )
    actions = cache.add_subparsers(dest="action", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy every call from one cache into another (keys already there are kept)",
        parents=[verbose],
        description=__doc__,
    )
    copy.add_argument(
        "--from", dest="source", required=True, help="a DuckDB or .parquet cache file, or a postgresql:// URL"
    )
    copy.add_argument(
        "--to", dest="target", required=True, help="a DuckDB or .parquet cache file, or a postgresql:// URL"
    )
    copy.set_defaults(func=cmd_cache_copy)
