"""Which arithmetic the trainer computes in (``trainer.dtype``), and for ``auto`` why.

``bf16-mixed`` is bf16 autocast over float32 weights: matrix products run in bfloat16 where the CPU has bf16 matrix
units (AMX, AVX-512 BF16), while the LoRA parameters, their gradients and the optimizer state stay float32 (weights
stored in bfloat16, ``dtype: bfloat16``, learned slower still: DPO loss 0.39 vs 0.27 after 6 steps). ``auto`` takes
it on a GPU with bf16 and on a CPU whose flags have bf16 units and whose bf16 matrix product measured at least
``MIN_SPEEDUP`` times float32's (a probe of the student's own shapes, a fraction of a second, remembered per machine
in ``precision.json`` so a checkpoint's identity does not flip between runs); float32 elsewhere. The resolved name,
never ``auto``, is what a checkpoint's identity holds.

Measured on a 2-core AMD EPYC with AVX-512 BF16 (bench/precision.py, study settings, 8 steps): SFT 1.26x and DPO
1.65x per step faster than float32 (DPO with the fused LM head on both sides), with the loss after 8 steps 1.4%
(SFT) and 4.0% (DPO) above float32's at the same step. Keeping the LoRA branch or the LM head in float32 changed
neither loss (measured, then dropped). That is why float32 stays the default and ``auto`` is a profile's choice.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

from resources.llama_build import cpu_flags  # the CPU's flags, as the llama.cpp build reads them

CHOICES = ("auto", "float32", "bf16-mixed", "bfloat16", "float16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_SPEEDUP = 1.5  # of the probe's matrix product; the trainer's step gains far less than its matmul (docs)
PROBE_SHAPE = (1024, 576, 1536)  # tokens x hidden x MLP width of the 135M student (SmolLM2: 576, 1536)


def matmul_rates(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of one matrix product of ``shape`` in float32 and in bfloat16 (best of ``repeats``)."""
    import torch

    m, k, n = shape
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # the first call picks kernels
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        rates[name] = round(2 * m * k * n / best / 1e9, 1)
    return rates


def _machine_key() -> str:
    import torch

    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")),
        platform.processor(),
    )
    payload = [model, sorted(cpu_flags() & set(BF16_FLAGS)), torch.__version__, torch.get_num_threads()]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:12]


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def resolve(dtype: str, device: str, memo_dir: Path | None = None) -> tuple[str, str]:
    """(the dtype a training runs in, why): ``auto`` decided as the module says, anything else as given."""
    if dtype not in CHOICES:
        raise ValueError(f"trainer.dtype must be one of {', '.join(CHOICES)}, not {dtype!r}")
    if dtype != "auto":
        return dtype, "set in the profile"
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "the GPU has bf16"
        return "float32", "the GPU has no bf16"
    units = sorted(cpu_flags() & set(BF16_FLAGS))
    if not units:
        return "float32", "the CPU has no bf16 matrix units (amx_bf16, avx512_bf16)"
    rates = _probe(memo_dir)
    speedup = rates["bfloat16"] / rates["float32"]
    measured = f"{', '.join(units)}; bf16 matmul {rates['bfloat16']:.0f} vs float32 {rates['float32']:.0f} GFLOP/s"
    if speedup >= MIN_SPEEDUP:
        return "bf16-mixed", measured
    return "float32", f"{measured}: under {MIN_SPEEDUP}x"


def _probe(memo_dir: Path | None) -> dict[str, float]:
    """The probe's rates for this machine, measured once and remembered in ``memo_dir/precision.json``."""
    key = _machine_key()
    path = memo_dir / "precision.json" if memo_dir is not None else None
    known = {}
    if path is not None and path.exists():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            known = {}
    if key in known:
        return known[key]
    rates = matmul_rates()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps({**known, key: rates}, indent=2))
        os.replace(partial, path)
    return rates
