"""Prefix sharing for batched scoring: sequences that begin alike are prefilled so that their common start is
computed once and its KV copied (``llama_memory_seq_cp``) into the others' streams.

A judge's prompts all begin with its instructions, and the answers of one request with the request too: in a study's
evaluation every test prompt is judged for each model and sample (27 answers a request), so most of a judge prompt's
start was computed 27 times. ``BatchEngine.score(..., share_prefixes=True)`` calls ``score_shared``: the sequences in
sorted order, ``n_seq`` at a time (a wave), each wave cut into runs by ``shared_runs`` (the cut that prefills the fewest
tokens); a run's first sequence prefills the run's common start alone, then the others get a copy of its KV and
prefill only their own rest. A wanted position never lies inside the shared start, so every logit row comes from a
step that fed the row's own token, as without sharing (equal up to the rounding of another ubatch's kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from resources.decode_budget import DECODE_LOCK


@dataclass
class _Prefill:
    index: int
    tokens: list[int]
    wanted: range
    seq_id: int
    fed: int = 0
    until: int | None = None  # prefill only up to here for now (a shared prefix); None: to the end


MIN_SHARED_TOKENS = 8  # a shorter common prefix is not worth a KV copy


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def shared_runs(tokens: Sequence[Sequence[int]], limits: Sequence[int]) -> list[tuple[int, int, int]]:
    """Cut sorted sequences into consecutive runs ``(first, last + 1, shared)`` that prefill the fewest tokens: a
    run's ``shared`` prefix (the run's common prefix, at most each member's limit) is computed once, the rest per
    sequence; ``shared`` is 0 for a run that shares nothing. Cost of a run of k: sum of lengths - (k - 1) * shared;
    an exact dynamic programme over the wave (at most ``n_seq`` sequences)."""
    n = len(tokens)
    best = [0] + [-1] * n  # best[j]: most tokens saved by runs covering the first j sequences
    cut = [0] * (n + 1)
    shared_of: dict[tuple[int, int], int] = {}
    for j in range(1, n + 1):
        shared = limits[j - 1]
        for i in range(j - 1, -1, -1):  # the run i..j-1
            if i < j - 1:
                shared = min(shared, limits[i], common_prefix(tokens[i], tokens[i + 1]))
            value = shared if shared >= MIN_SHARED_TOKENS and j - i > 1 else 0
            saved = best[i] + (j - i - 1) * value
            if saved > best[j]:
                best[j], cut[j] = saved, i
                shared_of[(i, j)] = value
    runs, j = [], n
    while j > 0:
        i = cut[j]
        runs.append((i, j, shared_of[(i, j)]))
        j = i
    return runs[::-1]


def score_shared(engine, sequences, wanted, on_logits) -> None:
    """``score`` with shared prefixes: the sequences in sorted order, ``n_seq`` at a time (a wave). A wave is cut
    into runs (``shared_runs``); the first sequence of a run prefills the run's common prefix alone, the others
    receive a copy of its KV and prefill only their own remainder. Every wanted position lies after the shared
    prefix, so each sequence's logits are computed from its own tokens as in ``score``."""
    order = sorted(range(len(sequences)), key=lambda i: list(sequences[i]))
    with DECODE_LOCK, engine._busy:
        try:
            for start in range(0, len(order), engine.n_seq):
                engine._clear()
                wave = [
                    _Prefill(index, list(sequences[index]), wanted[index], seq_id)
                    for seq_id, index in enumerate(order[start : start + engine.n_seq])
                ]
                limits = [min(len(job.tokens) - 1, *(job.wanted[:1] or [len(job.tokens)])) for job in wave]
                runs = shared_runs([job.tokens for job in wave], limits)
                leaders = [wave[first] for first, _, shared in runs if shared]
                for job, shared in zip(leaders, [shared for _, _, shared in runs if shared]):
                    job.until = shared
                while any(job.fed < job.until for job in leaders):
                    engine._prefill_step([job for job in leaders if job.fed < job.until], on_logits)
                for first, last, shared in runs:
                    for job in wave[first + 1 : last] if shared else []:
                        engine._llama_cpp.llama_memory_seq_cp(engine.memory, wave[first].seq_id, job.seq_id, -1, -1)
                        job.fed = shared
                for job in wave:
                    job.until = None
                while any(job.fed < len(job.tokens) for job in wave):
                    engine._prefill_step([job for job in wave if job.fed < len(job.tokens)], on_logits)
        finally:
            engine._clear()
