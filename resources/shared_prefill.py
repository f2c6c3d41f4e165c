"""Prefix sharing for batched scoring and generation: sequences that begin alike are prefilled so that their common
start is computed once and its KV copied (``llama_memory_seq_cp``) into the others' streams.

Generation (``BatchEngine.generate(..., share_prefixes=True)``): a prompt admitted to a slot picks the slot already
in the context that shares the longest start with it (``pick_source``; at least ``MIN_SHARED_TOKENS``, and never its
last prompt token, whose logits it must compute itself). It waits until that slot has that start in its KV, copies
the source's whole stream (llama.cpp copies across KV streams only whole), removes what lies past the shared start,
and prefills only the rest (``take_shared``). ALMoST's prompted configurations repeat ~260 tokens of demonstrations
before each prompt, and every chat of a task its system prompt: 85-88% and 41-53% of their prompt tokens.

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


def pick_source(slot, active) -> tuple[int | None, int]:
    """The slot among ``active`` whose prompt shares the longest start with ``slot``'s, and that start's length
    (capped below ``slot``'s last prompt token); (None, 0) when no start reaches ``MIN_SHARED_TOKENS``."""
    prompt, best = slot.request.prompt, (None, 0)
    for other in sorted(active, key=lambda s: s.seq_id):  # one still waiting for its own copy serves after it
        shared = min(common_prefix(prompt, other.request.prompt), len(prompt) - 1)
        if shared >= MIN_SHARED_TOKENS and shared > best[1]:
            best = (other.seq_id, shared)
    return best


def take_shared(engine, slots) -> None:
    """Every waiting slot whose source now holds the shared start in its KV takes a copy of it: the source's stream
    whole (across streams llama.cpp copies only whole ones; the data moves at the next decode), minus the cells past
    the shared start. A source gone before that (it cannot finish before its prompt is in) leaves the slot to prefill
    its whole prompt."""
    llama_cpp, changed = engine._llama_cpp, True
    while changed:  # a chain (a slot waiting on one that waits itself) resolves in one call
        changed = False
        for slot in sorted(slots.values(), key=lambda s: s.seq_id):
            if slot.source is None:
                continue
            source = slots.get(slot.source)
            if source is None:
                slot.source, slot.shared = None, 0
            elif source.fed >= slot.shared and source.source is None:
                llama_cpp.llama_memory_seq_cp(engine.memory, source.seq_id, slot.seq_id, -1, -1)
                llama_cpp.llama_memory_seq_rm(engine.memory, slot.seq_id, slot.shared, -1)
                slot.fed, slot.source, changed = slot.shared, None, True


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
