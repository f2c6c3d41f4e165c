"""``dsc doctor``: prove that llama.cpp can generate on this CPU before the first real model call.

A llama.cpp build compiled for another CPU (or with AMX kernels on a CPU with AMX) does not raise: it kills the
interpreter with SIGSEGV or SIGILL at the first decode, taking a Dagster run and its log with it. So the check loads
each model the profile uses and generates a few tokens in a *child* process; a child that dies by a signal becomes
a ``DoctorError`` that says what happened and the exact command that fixes it. A pass is remembered in
``DSC_HOME/doctor.json``, keyed by the llama.cpp library file, the model file and the CPU, so later runs skip it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from resources.hashing import content_hash
from resources.llama_build import cpu_flags, installed_marker

FIX_COMMAND = "make llama-rebuild   (the same as: .venv/bin/python -m resources.llama_build --rebuild)"
PROBE_TOKENS = 4


class DoctorError(RuntimeError):
    """llama.cpp cannot generate here; the message names the cause and the fix."""


@dataclass
class ProbeResult:
    model: str
    ok: bool
    tokens: int = 0
    seconds: float = 0.0
    system_info: str = ""
    cached: bool = False


def llama_library() -> Path | None:
    """The compiled libllama of the installed llama-cpp-python (without importing it: importing loads it)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    libs = sorted((Path(spec.origin).parent / "lib").glob("libllama*"))
    return libs[0] if libs else None


def probe_key(model_path: Path) -> str:
    """What a pass depends on: the llama.cpp build, the model file, and the CPU it ran on."""
    library = llama_library()
    stamp = lambda p: [str(p), p.stat().st_size, p.stat().st_mtime_ns] if p and p.exists() else None  # noqa: E731
    return content_hash("doctor", stamp(library), stamp(model_path), sorted(cpu_flags()), length=16)


def child_command(model_path: Path, n_threads: int = 1) -> list[str]:
    return [sys.executable, "-m", "dsc_assets.build.doctor", "--child", str(model_path), "--threads", str(n_threads)]


def run_probe(model: str, command: list[str], timeout_s: float = 300) -> ProbeResult:
    """Run a probe child; a signal death, an error exit or a hang becomes a DoctorError with the fix."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DoctorError(
            f"dsc doctor: llama.cpp did not generate {PROBE_TOKENS} tokens with {model} within {timeout_s:.0f}s "
            f"(hung, or far too slow for this CPU). Check `dsc doctor` output and try: {FIX_COMMAND}"
        ) from None
    if done.returncode < 0:
        number = -done.returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        raise DoctorError(
            f"dsc doctor: llama.cpp crashed ({name}, signal {number}) while generating {PROBE_TOKENS} tokens with "
            f"{model} in a child process. {_build_summary()} A build for another CPU, or one with llama.cpp's AMX "
            f"kernels (pip's default GGML_NATIVE=ON on a CPU with AMX), dies like this at the first decode. "
            f"Fix: {FIX_COMMAND}"
        )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DoctorError(f"dsc doctor: the llama.cpp probe with {model} failed (exit {done.returncode}): {tail}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DoctorError(f"dsc doctor: the probe with {model} printed no result: {done.stdout[-300:]!r}") from None
    return ProbeResult(
        model=model, ok=True, tokens=data["tokens"], seconds=data["seconds"], system_info=data["system_info"]
    )


def _build_summary() -> str:
    marker = installed_marker()
    if marker is None:
        return "This llama-cpp-python was not installed by dsc's build (pip built it, likely with -march=native)."
    flags = " ".join(a.removeprefix("-D") for a in marker.get("cmake_args", []) if a.endswith("=ON"))
    return f"This llama-cpp-python was built by dsc (key {marker.get('key')}: {flags})."


def check_models(models: dict[str, Path], home: Path, force: bool = False) -> list[ProbeResult]:
    """Probe each model file once per (build, file, CPU); remember passes in ``home/doctor.json``."""
    record_path = home / "doctor.json"
    try:
        passed = json.loads(record_path.read_text())
    except (OSError, ValueError):
        passed = {}
    results = []
    for name, path in models.items():
        key = probe_key(path)
        if not force and key in passed:
            results.append(ProbeResult(**{**passed[key], "cached": True}))
            continue
        result = run_probe(name, child_command(path))
        passed[key] = asdict(result)
        home.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(passed, indent=2))
        results.append(result)
    return results


def profile_models(profile, home: Path) -> dict[str, Path]:
    """The GGUF files a profile runs in llama.cpp (the generator only when it is embedded)."""
    from resources.models import resolve_model

    refs = [profile.judge.model, profile.student.model]
    if profile.generator.backend == "llama_cpp":
        refs.insert(0, profile.generator.model)
    return {ref: resolve_model(ref, home / "models").path for ref in dict.fromkeys(refs)}


def _child(model_path: str, n_threads: int) -> None:
    from llama_cpp import Llama, llama_print_system_info

    llama = Llama(model_path=model_path, n_ctx=256, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
    started = time.perf_counter()
    out = llama.create_completion("The capital of France is", max_tokens=PROBE_TOKENS, temperature=0.0)
    seconds = time.perf_counter() - started
    info = llama_print_system_info()
    print(
        json.dumps(
            {
                "tokens": int(out["usage"]["completion_tokens"]),
                "seconds": round(seconds, 3),
                "system_info": info.decode() if isinstance(info, bytes) else str(info),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    _child(options.child, options.threads)
