"""The whole shared deployment on 127.0.0.1, started and stopped by one command (issue 25):

    .venv/bin/python -m resources.shared_deployment [--servers 2] [--workers 2] [--cpus 1] [--threads 1]
        [--model smollm2-135m] [--profile shared.yaml]      # or: make shared

starts a PostgreSQL server with three databases (the call cache, the Dagster instance, the warehouse), a Ray head
with ``--workers`` worker nodes, and ``--servers`` llama.cpp servers of ``--model``; writes a profile that extends the
test profile and generates over those servers (``--profile``; with ``--model`` the teacher, point it at the study's
settings yourself), and prints the variables a run needs. Ctrl-C (or a ``kill``) stops everything it started, in the
reverse order, and deletes the PostgreSQL and Ray folders. In another shell:

    export $(cat .dsc/shared.env)                    # the printed lines, also written there
    DSC_PROFILE=shared.yaml .venv/bin/dsc run --tasks sentiment,privacy,sycophancy

Each piece can also run alone: ``python -m resources.postgres_server``, ``python -m resources.ray_cluster``,
``python -m resources.llama_server``. On Kubernetes none of this is used: docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from resources.llama_server import start_servers
from resources.postgres_server import PostgresServer
from resources.ray_cluster import LocalRayCluster

POOL_PROFILE = """# {header}
extends: {extends}
generator:
  backend: openai
  model: {model}
  model_revision: {revision}
  max_concurrency: 2
  endpoints:
{endpoints}
"""


def pool_profile(servers, extends: str, model: str, revision: str, header: str) -> str:
    """A profile that extends ``extends`` and generates over ``servers`` (llama.cpp servers' pool, 2 requests in
    flight each); ``revision`` names the servers' weights in the cache's keys."""
    endpoints = "\n".join(f"    - url: {server.base_url}" for server in servers)
    return POOL_PROFILE.format(header=header, extends=extends, model=model, revision=revision, endpoints=endpoints)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2, help="llama.cpp servers")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per Ray worker")
    parser.add_argument("--threads", type=int, default=1, help="threads per llama.cpp server")
    parser.add_argument("--model", default="smollm2-135m", help="the servers' model: a known name or a .gguf path")
    parser.add_argument("--extends", default="test", help="the profile the written one extends")
    parser.add_argument("--profile", default="shared.yaml", help="where to write the profile")
    parser.add_argument("--env-file", default=".dsc/shared.env", help="where to write the variables")
    parser.add_argument("--model-cache-dir", default=".dsc/models")
    args = parser.parse_args(argv)

    def stop(signum, frame):  # Ctrl-C, and a `kill` (a background job of a script ignores SIGINT)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with ExitStack() as started:
        try:
            postgres = started.enter_context(PostgresServer())
            urls = postgres.shared_databases()
            ray = started.enter_context(LocalRayCluster(workers=args.workers, cpus=args.cpus))
            servers = start_servers(
                args.servers, model=args.model, model_cache_dir=args.model_cache_dir, n_threads=args.threads
            )
            started.callback(lambda: [server.stop() for server in servers])
            header = "Written by resources/shared_deployment.py: generating over the servers it started."
            Path(args.profile).write_text(pool_profile(servers, args.extends, args.model, "local", header))
            variables = {
                **urls,
                "DSC_EXECUTOR": "ray",
                "DSC_RAY_ADDRESS": ray.address,
                "DSC_MAX_CONCURRENT_RUNS": str(max(1, args.workers)),
                "DSC_LLAMA_THREADS": "1",
            }
            lines = "\n".join(f"{name}={value}" for name, value in variables.items())
            Path(args.env_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.env_file).write_text(lines + "\n")
            print(f"{lines}\n# profile: {args.profile}; these lines: {args.env_file}; Ctrl-C stops all", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
