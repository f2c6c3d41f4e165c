"""`dsc doctor`: can llama.cpp generate on this CPU with the profile's models? (a child-process probe)"""

from __future__ import annotations

import argparse

from dsc_assets.cli.common import healthy, prepare_environment


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the llama.cpp build and the CPU, then probe every model of the profile in a child process."""
    prepare_environment(args.profile)
    from dsc_assets.lib.profiles import load_profile
    from resources.llama_build import build_key, chosen_features, cmake_args, cpu_flags, installed_marker

    flags = cpu_flags()
    features = [name for name, on in chosen_features(flags).items() if on]
    amx = sorted(f for f in flags if f.startswith("amx"))
    print(
        f"dsc doctor: CPU features used by a dsc build here: {' '.join(features) or 'none'}"
        f"{'; AMX present (' + ' '.join(amx) + '), never compiled in' if amx else ''}"
    )
    marker = installed_marker()
    expected = build_key(cmake_args())
    if marker is None:
        print("dsc doctor: llama-cpp-python was not installed by dsc's build; fix: make llama-rebuild")
    elif marker.get("key") != expected:
        print(
            f"dsc doctor: the installed llama.cpp build (key {marker.get('key')}) was made for another CPU "
            f"(this CPU's key: {expected}); fix: make llama-rebuild"
        )
    else:
        print(f"dsc doctor: llama.cpp build {marker['key']} matches this CPU")
    return 0 if healthy(load_profile(), force=args.force, verbose=True) else 1
