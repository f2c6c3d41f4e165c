"""The cores of one process, shared by the llama.cpp contexts that decode in it (``DECODE_LOCK``)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from resources.threads import usable_cores  # (sets OMP_WAIT_POLICY before llama_cpp loads)


class DecodeBudget:
    """The cores of this process, shared by the llama.cpp contexts that decode in it. ``with DECODE_LOCK:`` takes all
    of them (one context decodes at a time: two contexts each with all cores spin against each other);
    ``with DECODE_LOCK.cores(n):`` takes n and waits until n are free, so contexts of one thread each decode side by
    side, one per core. A thread that holds some cores holds them again at no cost (nested sections).

    Why: a small model's decode step is mostly thread synchronisation, not arithmetic. The 135M student at 16
    sequences made 92 tok/s on 2 threads against 80 on 1; two 1-thread contexts together made 155 (1.69x), measured on
    2 idle cores (bench/README.md "Evaluation in parallel"). Engines a holder touched are in use and never evicted."""

    def __init__(self, total: int | None = None):
        self._total = total
        self._cond = threading.Condition(threading.Lock())
        self._used = 0
        self._holders: dict[int, list] = {}  # thread -> [depth, cores, engines touched]
        self._entered = threading.local()

    @property
    def total(self) -> int:
        return self._total or usable_cores()

    @contextmanager
    def cores(self, n: int | None = None) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            held = self._holders.get(me)
            if held is not None:
                held[0] += 1
            else:
                need = max(1, min(n or self.total, self.total))
                while self._used + need > self.total:
                    self._cond.wait()
                self._used += need
                self._holders[me] = [1, need, set()]
        try:
            yield
        finally:
            with self._cond:
                held = self._holders[me]
                held[0] -= 1
                if held[0] == 0:
                    del self._holders[me]
                    self._used -= held[1]
                    self._cond.notify_all()

    def __enter__(self) -> None:
        stack = self._entered.__dict__.setdefault("stack", [])
        section = self.cores()
        section.__enter__()
        stack.append(section)

    def __exit__(self, *exc) -> None:
        self._entered.stack.pop().__exit__(*exc)

    def touch(self, engine: object) -> None:  # a resources.batched.BatchEngine
        with self._cond:
            held = self._holders.get(threading.get_ident())
            if held is not None:
                held[2].add(id(engine))

    def in_use(self) -> set[int]:
        with self._cond:
            return {engine for held in self._holders.values() for engine in held[2]}


DECODE_LOCK = DecodeBudget()
