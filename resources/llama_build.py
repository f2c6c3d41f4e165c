"""Build llama-cpp-python once per (version, CPU flags) into a project-local wheel, and install from it.

Why: pip's default build is ``GGML_NATIVE=ON``, which on a CPU with AMX compiles llama.cpp's AMX kernels, and
those crash at the first decode (SIGSEGV at ``ldtilecfg``). pip also caches the built wheel by sdist, not by
``CMAKE_ARGS``, so a crashing native wheel comes back on every later install. Here the instruction sets are
chosen deliberately from the CPU's own flags (everything up to AVX-512 BF16 that the CPU has; AMX never), the
wheel is built with pip's cache off into ``.dsc/wheels/<version>-<key>/`` (key = hash of version and flags), and
installed from there. A different CPU gives a different key, hence a new build; the same CPU reuses the wheel.

Stdlib only: it runs before the project's dependencies are installed.
    python -m resources.llama_build            # build if needed, install into this interpreter's environment
    python -m resources.llama_build --rebuild  # build again even if the wheel exists
    python -m resources.llama_build --show     # print the chosen flags and key, build nothing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resources.artifacts import artifact_lock, build_once

LLAMA_CPP_VERSION = "0.3.36"  # must match the pin in pyproject.toml (a test checks)
REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER_NAME = "dsc-llama-build.json"  # written into the environment's prefix after an install

# (GGML option, /proc/cpuinfo flags that must all be present). Order is the order of the x86 feature ladder.
X86_FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SSE42", ("sse4_2",)),
    ("AVX", ("avx",)),
    ("F16C", ("f16c",)),
    ("FMA", ("fma",)),
    ("AVX2", ("avx2",)),
    ("BMI2", ("bmi2",)),
    ("AVX_VNNI", ("avx_vnni",)),
    # -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw are all passed by GGML_AVX512.
    ("AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("AVX512_VBMI", ("avx512vbmi",)),
    ("AVX512_VNNI", ("avx512_vnni",)),
    ("AVX512_BF16", ("avx512_bf16",)),
)
# Never compiled in, whatever the CPU has: these kernels are what crashes (issue: AMX SIGSEGV at first decode).
ALWAYS_OFF = ("AMX_TILE", "AMX_INT8", "AMX_BF16")
# Not needed by dsc and a third of the compile time: the multimodal (llava/mtmd) library.
EXTRA_ARGS = ("-DLLAVA_BUILD=OFF",)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags as the kernel reports them (first processor), or an empty set off Linux."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def chosen_features(flags: set[str]) -> dict[str, bool]:
    """GGML instruction-set options for a CPU with these flags: on where the CPU has every flag, AMX always off."""
    chosen = {option: all(flag in flags for flag in needs) for option, needs in X86_FEATURES}
    chosen.update({option: False for option in ALWAYS_OFF})
    return chosen


def cmake_args(flags: set[str] | None = None, machine: str | None = None) -> list[str]:
    """CMAKE_ARGS for this CPU. x86-64: explicit flags, never native. Elsewhere: llama.cpp's defaults."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return list(EXTRA_ARGS)  # no AMX off x86; native is llama.cpp's portable choice there
    features = chosen_features(cpu_flags() if flags is None else flags)
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-DGGML_{option}={'ON' if on else 'OFF'}" for option, on in features.items()]
    return args + list(EXTRA_ARGS)


def build_key(args: list[str], version: str = LLAMA_CPP_VERSION) -> str:
    """Content key of a build: the version and the exact flags (never the pip cache's sdist key)."""
    payload = json.dumps({"version": version, "cmake_args": args, "machine": platform.machine()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def wheelhouse() -> Path:
    return Path(os.environ.get("DSC_WHEELHOUSE", REPO_ROOT / ".dsc" / "wheels")).expanduser()


def build_dir(key: str, version: str = LLAMA_CPP_VERSION) -> Path:
    return wheelhouse() / f"llama-cpp-python-{version}-{key}"


def find_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    return wheels[-1] if wheels else None


def installed_marker(prefix: str | None = None) -> dict | None:
    """What this environment's llama-cpp-python was installed from (None if not by this module)."""
    try:
        return json.loads((Path(prefix or sys.prefix) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _pip(*args: str, env: dict | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def compile_wheel(args: list[str], key: str, out: Path, version: str = LLAMA_CPP_VERSION) -> None:
    """Compile llama-cpp-python with these flags into the folder ``out`` (the wheel and its build.json)."""
    started = time.time()
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="dsc-llama-", dir=out.parent) as tmp:
        source = Path(tmp) / "src"
        # The sdist may come from pip's download cache; the *built wheel* never does (--no-cache-dir below).
        _pip("download", "-q", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(source))
        sdist = next(source.glob("llama_cpp_python-*"))
        env = dict(os.environ, CMAKE_ARGS=" ".join(args), FORCE_CMAKE="1")
        env.setdefault(
            "CMAKE_BUILD_PARALLEL_LEVEL",
            str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1),
        )
        print(f"building llama-cpp-python {version} with CMAKE_ARGS={env['CMAKE_ARGS']} (a few minutes)", flush=True)
        _pip("wheel", "-q", "--no-deps", "--no-cache-dir", str(sdist), "-w", str(out), env=env)
    wheel = find_wheel(out)
    if wheel is None:
        raise SystemExit(f"llama-cpp-python build produced no wheel in {out}")
    info = {
        "version": version,
        "key": key,
        "cmake_args": args,
        "wheel": wheel.name,
        "built_seconds": round(time.time() - started, 1),
        "machine": platform.machine(),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2))


def build_wheel(
    args: list[str], key: str, version: str = LLAMA_CPP_VERSION, rebuild: bool = False, compile=compile_wheel
) -> Path:
    """The wheel for these flags, compiled once however many installs ask at the same time (two clones sharing a
    wheelhouse): one compiles into a partial folder and renames it into place, the others wait and reuse it; a
    killed build leaves nothing. ``compile(args, key, out, version)`` writes the wheel into ``out``."""
    target = build_dir(key, version)
    if rebuild and target.exists():
        with artifact_lock(target):
            shutil.rmtree(target, ignore_errors=True)
    if build_once(target, lambda out: compile(args, key, out, version), lambda folder: find_wheel(folder) is not None):
        print(f"built {find_wheel(target)} (key {key})", flush=True)
    else:
        print(f"reusing {find_wheel(target)} (key {key})", flush=True)
    return find_wheel(target)


def ensure_installed(rebuild: bool = False) -> dict:
    """Build (if needed) and install the wheel for this CPU into this interpreter's environment. Idempotent."""
    args = cmake_args()
    key = build_key(args)
    marker = installed_marker()
    installed = _installed_version()
    if not rebuild and marker and marker.get("key") == key and installed == LLAMA_CPP_VERSION:
        print(f"llama-cpp-python {installed} already built for this CPU (key {key})", flush=True)
        return marker
    wheel = build_wheel(args, key, rebuild=rebuild)  # two installs at once (one wheelhouse): one compiles
    _pip("install", "-q", "--no-deps", "--force-reinstall", "--no-cache-dir", str(wheel))
    info = {"version": LLAMA_CPP_VERSION, "key": key, "cmake_args": args, "wheel": str(wheel)}
    (Path(sys.prefix) / MARKER_NAME).write_text(json.dumps(info, indent=2))
    return info


def _installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resources.llama_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="compile again even if a wheel for this key exists")
    parser.add_argument("--show", action="store_true", help="print the flags and key for this CPU and exit")
    options = parser.parse_args(argv)
    if options.show:
        args = cmake_args()
        print(
            json.dumps(
                {
                    "key": build_key(args),
                    "cmake_args": args,
                    "installed": installed_marker(),
                    "wheel": str(find_wheel(build_dir(build_key(args))) or ""),
                },
                indent=2,
            )
        )
        return 0
    ensure_installed(rebuild=options.rebuild)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
