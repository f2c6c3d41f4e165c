"""The portable llama.cpp build vs pip's native build, side by side in one run.

    python bench/llama_build.py [--model smollm2-135m] [--rounds 3] [--max-tokens 128] [--threads 1]

dsc installs llama-cpp-python compiled with explicit instruction sets chosen from the CPU's flags (never AMX,
never -march=native; see resources/llama_build.py). This measures what that costs against the native build on a CPU
where both work. The native build is compiled once into ``.dsc/wheels/native-<key>/`` (a few minutes) and unpacked
into a private folder; each measurement runs in a fresh child process that imports one build or the other, in
ABAB... order, so drift in machine speed hits both alike. Each child loads the model, answers one untimed warm-up
request, then times prefill (a ~300-token prompt) and decode (greedy, ``--max-tokens``). Prints tokens/s per build
and the ratios portable/native; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resources import llama_build  # noqa: E402
from resources.models import resolve_model  # noqa: E402

NATIVE_ARGS = ["-DGGML_NATIVE=ON", *llama_build.EXTRA_ARGS]  # pip's default, minus the multimodal library

CHILD = r"""
import json, sys, time
from llama_cpp import Llama, llama_print_system_info
import llama_cpp
path, threads, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llama = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
prompt = "Write a detailed review of a film about a lighthouse keeper. " * 25
llama.create_completion("Hello", max_tokens=4, temperature=0.0)
tokens = llama.tokenize(prompt.encode())
llama.reset(); started = time.perf_counter(); llama.eval(tokens); prefill = len(tokens) / (time.perf_counter() - started)
llama.reset(); started = time.perf_counter()
out = llama.create_completion("Once upon a time", max_tokens=max_tokens, temperature=0.0)
decode = out["usage"]["completion_tokens"] / (time.perf_counter() - started)
print(json.dumps({"prefill": prefill, "decode": decode, "text": out["choices"][0]["text"],
                  "file": llama_cpp.__file__, "info": llama_print_system_info().decode()}))
"""


def native_site() -> Path:
    """Build (once) the native wheel and unpack it into a folder a child can put first on its path."""
    key = "native-" + llama_build.build_key(NATIVE_ARGS)
    folder = llama_build.build_dir(key)
    wheel = llama_build.find_wheel(folder) or llama_build.build_wheel(NATIVE_ARGS, key)
    site = folder / "site"
    if not (site / "llama_cpp").is_dir():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    return site


def measure(site: Path | None, model: Path, threads: int, max_tokens: int) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if site is not None:
        env["PYTHONPATH"] = f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(threads), str(max_tokens)],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    if done.returncode != 0:
        raise SystemExit(f"build at {site or 'venv'} failed (exit {done.returncode}): {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="1 keeps the figures steady on a shared machine")
    parser.add_argument("--json")
    args = parser.parse_args()

    marker = llama_build.installed_marker()
    if marker is None:
        raise SystemExit("the venv's llama-cpp-python was not installed by resources.llama_build; run make install")
    model = resolve_model(args.model, ROOT / ".dsc" / "models").path
    native = native_site()
    runs: dict[str, list[dict]] = {"portable": [], "native": []}
    for round_ in range(args.rounds):
        order = ("portable", "native") if round_ % 2 == 0 else ("native", "portable")
        for side in order:
            result = measure(None if side == "portable" else native, model, args.threads, args.max_tokens)
            runs[side].append(result)
            print(
                f"round {round_ + 1} {side:<8} prefill {result['prefill']:7.1f} tok/s  decode {result['decode']:6.1f} tok/s",
                flush=True,
            )
    assert runs["native"][0]["file"].startswith(str(native)), "the native child imported the venv's build"
    summary = {
        side: {
            "prefill_tok_s": round(statistics.median(r["prefill"] for r in rs), 1),
            "decode_tok_s": round(statistics.median(r["decode"] for r in rs), 1),
            "system_info": rs[0]["info"],
        }
        for side, rs in runs.items()
    }
    same_text = runs["portable"][0]["text"] == runs["native"][0]["text"]
    result = {
        "model": args.model,
        "threads": args.threads,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "cpu_features_used": [f for f, on in llama_build.chosen_features(llama_build.cpu_flags()).items() if on],
        "portable_key": marker["key"],
        **summary,
        "decode_ratio_portable_over_native": round(
            summary["portable"]["decode_tok_s"] / summary["native"]["decode_tok_s"], 3
        ),
        "prefill_ratio_portable_over_native": round(
            summary["portable"]["prefill_tok_s"] / summary["native"]["prefill_tok_s"], 3
        ),
        "same_greedy_text": same_text,
    }
    for side in ("portable", "native"):
        print(f"{side:<8} llama.cpp features: {summary[side]['system_info']}")
    print(
        f"\ndecode  portable/native = {result['decode_ratio_portable_over_native']}  "
        f"({summary['portable']['decode_tok_s']} vs {summary['native']['decode_tok_s']} tok/s)"
    )
    print(
        f"prefill portable/native = {result['prefill_ratio_portable_over_native']}  "
        f"({summary['portable']['prefill_tok_s']} vs {summary['native']['prefill_tok_s']} tok/s)"
    )
    print(f"same greedy text: {same_text}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
