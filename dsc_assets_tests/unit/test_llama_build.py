"""The portable llama.cpp build and the child-process self-check (`dsc doctor`)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from dsc_assets.build.doctor import DoctorError, check_models, child_command, run_probe
from resources import llama_build
from resources.models import resolve_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# /proc/cpuinfo flag lines of two real CPUs: a Sapphire Rapids VM (AMX) and an older AVX-only Xeon.
SAPPHIRE_RAPIDS = (
    "flags : fpu sse4_2 avx f16c fma avx2 bmi2 avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi "
    "avx512_vnni avx512_bf16 avx_vnni amx_tile amx_int8 amx_bf16 avx512_fp16"
)
SANDY_BRIDGE = "flags : fpu sse4_1 sse4_2 avx popcnt"


def _args(cpuinfo: str) -> dict[str, str]:
    args = llama_build.cmake_args(llama_build.cpu_flags(cpuinfo), machine="x86_64")
    return dict(a.removeprefix("-D").split("=") for a in args)


def test_amx_cpu_gets_avx512_but_never_amx_or_native():
    args = _args(SAPPHIRE_RAPIDS)
    assert args["GGML_NATIVE"] == "OFF"
    assert all(args[f"GGML_{f}"] == "OFF" for f in ("AMX_TILE", "AMX_INT8", "AMX_BF16"))
    assert all(args[f"GGML_{f}"] == "ON" for f in ("AVX2", "FMA", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI"))


def test_older_cpu_gets_only_what_it_has():
    args = _args(SANDY_BRIDGE)
    assert args["GGML_AVX"] == "ON" and args["GGML_SSE42"] == "ON"
    assert all(args[f"GGML_{f}"] == "OFF" for f in ("AVX2", "FMA", "F16C", "BMI2", "AVX512"))


def test_avx512_needs_all_five_subsets():
    partial = _args("flags : sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd")  # no vl/dq/bw: -mavx512bw would crash
    assert partial["GGML_AVX512"] == "OFF"


def test_key_depends_on_flags_and_version():
    amx = llama_build.cmake_args(llama_build.cpu_flags(SAPPHIRE_RAPIDS), machine="x86_64")
    old = llama_build.cmake_args(llama_build.cpu_flags(SANDY_BRIDGE), machine="x86_64")
    assert llama_build.build_key(amx) == llama_build.build_key(list(amx))
    assert llama_build.build_key(amx) != llama_build.build_key(old)
    assert llama_build.build_key(amx) != llama_build.build_key(amx, version="0.0.1")


def test_version_matches_the_pyproject_pin():
    pin = re.search(r'"llama-cpp-python==([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text()).group(1)
    assert pin == llama_build.LLAMA_CPP_VERSION


def test_this_environment_runs_the_portable_build():
    """`make install` went through resources.llama_build: the installed llama.cpp is this CPU's explicit build."""
    marker = llama_build.installed_marker()
    assert marker is not None, "llama-cpp-python was not installed by `python -m resources.llama_build`"
    assert marker["key"] == llama_build.build_key(llama_build.cmake_args())
    from llama_cpp import llama_print_system_info

    info = llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info
    if "avx2" in llama_build.cpu_flags():
        assert "AVX2 = 1" in info


def test_a_crashing_child_becomes_a_clear_error():
    segfault = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]  # a real SIGSEGV, like the AMX kernels
    with pytest.raises(DoctorError) as raised:
        run_probe("smollm2-135m", segfault, timeout_s=60)
    message = str(raised.value)
    assert "SIGSEGV" in message and "smollm2-135m" in message
    assert "make llama-rebuild" in message and "resources.llama_build --rebuild" in message


def test_a_failing_or_hanging_child_is_reported():
    with pytest.raises(DoctorError, match="exit 3.*no such model"):
        run_probe("m", [sys.executable, "-c", "import sys; print('no such model', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(DoctorError, match="within 1s"):
        run_probe("m", [sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)


def test_real_probe_generates_and_is_remembered(tmp_path):
    model = resolve_model("smollm2-135m", tmp_path / "models")
    first = check_models({"smollm2-135m": model.path}, tmp_path)
    assert first[0].ok and first[0].tokens > 0 and not first[0].cached
    assert "CPU" in first[0].system_info or "AVX" in first[0].system_info
    started = time.perf_counter()
    again = check_models({"smollm2-135m": model.path}, tmp_path)
    assert again[0].cached and time.perf_counter() - started < 1.0
    assert child_command(model.path)[1:3] == ["-m", "dsc_assets.build.doctor"]
