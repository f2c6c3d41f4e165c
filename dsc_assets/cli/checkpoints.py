"""``dsc checkpoints pack --to DIR`` and ``dsc checkpoints unpack --from DIR``: a home's finished checkpoints carried
to another home as their LoRA adapters (a few MB each) and rebuilt there (merged model and GGUF from the adapter,
checked against the packed GGUF's sha256), so a study that spans machines which start empty trains each checkpoint
once (docs/study-protocol.md section 7). The next run reuses an unpacked checkpoint as one trained in its home:
its folder is content-addressed by method, data and settings. Use the same DSC_HOME path in every home (ALMoST's RL
names its SFT start by path)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsc_assets.cli.common import UsageError, prepare_environment


def _checkpoints() -> Path:
    from dsc_assets.lib.profiles import dsc_home

    return dsc_home() / "artifacts" / "checkpoints"


def cmd_pack(args: argparse.Namespace) -> int:
    from resources.checkpoint_carry import pack

    prepare_environment(args.profile)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    source = _checkpoints()
    carried = pack(source, Path(args.target), tasks)
    if not carried:
        raise UsageError(f"{source}: no finished checkpoint" + (f" of {', '.join(tasks)}" if tasks else ""))
    for line in carried:
        print(f"  {line}")
    packed = sum(c.status == "packed" for c in carried)
    print(f"dsc checkpoints pack: {packed} of {len(carried)} checkpoints from {source} into {args.target}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from dsc_assets.lib.profiles import build_trainer, dsc_home, load_profile
    from resources.checkpoint_carry import CarryError, unpack

    prepare_environment(args.profile)
    trainer = build_trainer(load_profile(), dsc_home())
    try:
        carried = unpack(Path(args.source), _checkpoints(), trainer)
    except CarryError as error:
        raise UsageError(str(error)) from None
    for line in carried:
        print(f"  {line}")
    same = sum(c.status in ("unpacked", "already there") for c in carried)
    print(
        f"dsc checkpoints unpack: {len(carried)} checkpoints from {args.source} into {_checkpoints()}; "
        f"{same} are the packed bytes, {len(carried) - same} rebuilt with other bytes"
    )
    return 0


def add_checkpoints(sub, verbose) -> None:
    """`dsc checkpoints pack` and `dsc checkpoints unpack`."""
    command = sub.add_parser(
        "checkpoints", help="carry finished checkpoints (their LoRA adapters) between homes", parents=[verbose]
    )
    actions = command.add_subparsers(dest="action", required=True)
    pack = actions.add_parser(
        "pack", help="this home's finished checkpoints into a folder", parents=[verbose], description=__doc__
    )
    pack.add_argument("--to", dest="target", required=True, help="the folder (e.g. reports/study/checkpoints)")
    pack.add_argument("--tasks", help="comma-separated task names (default: every task's)")
    pack.add_argument("--profile", help="profile name or YAML path")
    pack.set_defaults(func=cmd_pack)
    unpack = actions.add_parser(
        "unpack", help="a packed folder's checkpoints into this home", parents=[verbose], description=__doc__
    )
    unpack.add_argument("--from", dest="source", required=True, help="a folder written by `dsc checkpoints pack`")
    unpack.add_argument("--profile", help="profile name or YAML path (its student and trainer rebuild them)")
    unpack.set_defaults(func=cmd_unpack)
