"""Shared artifacts are built once however many processes ask at the same time (resources/artifacts.py): every
asker gets the finished artifact, exactly one builds it, no partial is left, and a dead builder's leftovers are
cleared by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dsc_assets_tests.conftest import PROJECT_ROOT
from resources.artifacts import build_once, partials

# One asker: build a folder slowly (so the others arrive while it builds), log who built and who got it.
ASKER = """
import os, sys, time
from pathlib import Path
from resources.artifacts import build_once

target, log, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])

def build(partial):
    partial.mkdir()
    (partial / "half").write_text("written first")
    with open(log, "a") as out:
        out.write(f"built {os.getpid()}\\n")
    time.sleep(delay)
    (partial / "done").write_text("written last")

built = build_once(target, build, lambda p: (p / "done").exists())
assert (target / "done").read_text() == "written last" and (target / "half").exists()
with open(log, "a") as out:
    out.write(f"got {os.getpid()} {built}\\n")
"""


def _askers(target: Path, log: Path, count: int, delay: float) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", ASKER, str(target), str(log), str(delay)], cwd=PROJECT_ROOT)
        for _ in range(count)
    ]


def test_three_processes_racing_for_one_artifact_all_get_it_and_one_builds(tmp_path):
    target, log = tmp_path / "shared" / "artifact", tmp_path / "log"
    askers = _askers(target, log, 3, 1.0)
    assert [p.wait(timeout=120) for p in askers] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert len([line for line in lines if line.startswith("built")]) == 1
    assert sorted(line.split()[-1] for line in lines if line.startswith("got")) == ["False", "False", "True"]
    assert not partials(target) and sorted(p.name for p in target.iterdir()) == ["done", "half"]


def test_a_builder_killed_midway_leaves_nothing_half_done_and_the_next_one_builds(tmp_path):
    target, log = tmp_path / "artifact", tmp_path / "log"
    [builder] = _askers(target, log, 1, 60.0)
    deadline = time.monotonic() + 60
    while not (log.exists() and "built" in log.read_text()):
        assert time.monotonic() < deadline and builder.poll() is None
        time.sleep(0.05)
    os.kill(builder.pid, signal.SIGKILL)  # mid-build: the lock dies with it, its partial stays behind
    builder.wait()
    assert not target.exists() and len(partials(target)) == 1
    [next_one] = _askers(target, log, 1, 0.0)
    assert next_one.wait(timeout=60) == 0
    assert (target / "done").exists() and not partials(target)


def test_a_failed_build_leaves_no_partial_and_no_target(tmp_path):
    target = tmp_path / "artifact"

    def broken(partial: Path) -> None:
        partial.write_text("half")
        raise RuntimeError("the build failed")

    try:
        build_once(target, broken)
    except RuntimeError:
        pass
    assert not target.exists() and not partials(target)
    assert build_once(target, lambda partial: partial.write_text("whole")) is True
    assert target.read_text() == "whole" and build_once(target, lambda partial: partial.write_text("again")) is False


# A checkpoint is trained in place and finished by its summary.json (resources/checkpoints.py): its own lock path.
TRAINER = """
import os, sys, time
from pathlib import Path
from resources.checkpoints import train_or_reuse
from resources.trainer import TrainResult

folder, log = Path(sys.argv[1]), Path(sys.argv[2])

def train():
    with open(log, "a") as out:
        out.write(f"trained {os.getpid()}\\n")
    (folder / "merged").mkdir(parents=True)
    time.sleep(1.0)
    return TrainResult(str(folder), str(folder / "adapter"), str(folder / "merged"), [1.0, 0.5], 2, 1.0)

checkpoint = train_or_reuse(folder, train, lambda result: {"gguf_path": str(folder / "model.gguf")})
assert checkpoint.summary["steps"] == 2 and checkpoint.summary["losses"] == [1.0, 0.5]
"""


def test_three_processes_asking_for_one_checkpoint_train_it_once(tmp_path):
    folder, log = tmp_path / "checkpoints" / "sft" / "sentiment" / "abc", tmp_path / "log"
    racers = [
        subprocess.Popen([sys.executable, "-c", TRAINER, str(folder), str(log)], cwd=PROJECT_ROOT) for _ in range(3)
    ]
    assert [p.wait(timeout=120) for p in racers] == [0, 0, 0]
    assert len(log.read_text().splitlines()) == 1 and (folder / "summary.json").exists()


# A split model (the teacher's shape: raw byte parts in several packages), assembled by three processes at once.
ASSEMBLER = """
import sys
from pathlib import Path
from resources.models import SplitModel, _assemble

sha, cache = sys.argv[1], Path(sys.argv[2])
model = SplitModel("dsc_probe_part{n}", "dsc-probe-part{n}", 3, "probe.gguf", sha, "chatml", "make install-teacher")
print(_assemble("probe", model, cache).read_bytes().hex())
"""


def test_three_processes_assembling_a_split_model_get_the_verified_file(tmp_path):
    import hashlib

    parts = [bytes([n]) * 300_000 for n in (1, 2, 3)]  # big enough that the racers overlap
    for n, data in enumerate(parts, start=1):
        (tmp_path / "site" / f"dsc_probe_part{n}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"dsc_probe_part{n}" / "__init__.py").write_text("")
        (tmp_path / "site" / f"dsc_probe_part{n}" / "data" / f"part{n:02d}.bin").write_bytes(data)
    whole = b"".join(parts)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{PROJECT_ROOT}"}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", ASSEMBLER, hashlib.sha256(whole).hexdigest(), str(tmp_path / "models")],
            cwd=PROJECT_ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0]
    assert set(outputs) == {whole.hex()} and not partials(tmp_path / "models" / "probe.gguf")


# The llama.cpp wheel (resources/llama_build.py), built by three installs sharing one wheelhouse. The compile (five
# minutes of cmake, run by `make install` on every clean clone) is replaced by one that writes a wheel-named file
# slowly: what is tested is the wheelhouse's build-once protocol around it.
WHEEL_BUILDER = """
import os, sys, time
from pathlib import Path
from resources import llama_build

log = Path(sys.argv[1])

def compile(args, key, out, version):
    out.mkdir(parents=True)
    with open(log, "a") as handle:
        handle.write(f"compiled {os.getpid()}\\n")
    time.sleep(1.0)
    (out / f"llama_cpp_python-{version}-cp3-none-any.whl").write_text("wheel")

wheel = llama_build.build_wheel(["-DGGML_NATIVE=OFF"], "probekey", compile=compile)
print(wheel)
"""


def test_three_installs_sharing_a_wheelhouse_compile_the_wheel_once(tmp_path):
    log, house = tmp_path / "log", tmp_path / "wheels"
    env = {**os.environ, "DSC_WHEELHOUSE": str(house)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", WHEEL_BUILDER, str(log)],
            cwd=PROJECT_ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [racer.communicate(timeout=120)[0].strip().splitlines()[-1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    target = house / "llama-cpp-python-0.3.36-probekey"
    assert set(outputs) == {str(target / "llama_cpp_python-0.3.36-cp3-none-any.whl")} and not partials(target)
