"""Batched decoding with llama.cpp's batch API: many sequences in one context, one ``llama_decode`` per step.

A single answer uses a fraction of what the CPU does in prefill (the teacher: ~9 tok/s decode, ~56 tok/s prefill
on 2 cores): a one-token step reads every weight for one row of arithmetic. Decoding ``n_seq`` sequences per step
reads the weights once for all of them. Two jobs use it:

- ``BatchEngine.generate``: continuous batching of chat completions. Up to ``n_seq`` answers are in flight; when one
  finishes (end-of-generation token, a stop string, or ``max_tokens``) its slot takes the next prompt at once. Each
  sequence has its own sampler chain (the chain ``Llama.create_chat_completion`` builds, seeded the same way), and
  each finished answer is handed to a callback at once, so the caller commits it before the others finish.
- ``BatchEngine.score``: many prefills per ``llama_decode`` with logits only where they are needed (the judge's
  verdict position, the DLMA answer tokens).

The engine shares the weights of a loaded ``llama_cpp.Llama`` (its tokenizer and chat template too) and owns a
second context with ``n_seq_max = n_seq`` and one KV stream of ``n_ctx_seq`` cells per sequence.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from resources.decode_budget import DECODE_LOCK, DecodeBudget  # noqa: F401 (sets OMP_WAIT_POLICY; importable here)
from resources.shared_prefill import _Prefill, pick_source, score_shared, take_shared

_REGISTRY = threading.Lock()  # the engines below

MAX_LOGIT_ROWS_PER_DECODE = 128  # bounds the logits buffer when scoring (rows x vocabulary x 4 bytes)


@dataclass
class Completion:
    """One finished answer of ``BatchEngine.generate``."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # its share of the engine's time (a batch's shares sum to its wall time), not its latency


@dataclass
class CompletionRequest:
    index: int
    prompt: list[int]
    stops: list[str]
    max_tokens: int


@dataclass
class _Slot:
    request: CompletionRequest
    seq_id: int
    sampler: Any
    share: float = 0.0  # this sequence's part of the engine's time: each step's seconds / sequences in the step
    fed: int = 0  # prompt tokens already in the KV cache
    completion: list[int] = field(default_factory=list)
    text: bytes = b""
    pending: int | None = None  # sampled, not yet decoded
    multibyte_fix: int = 0
    source: int | None = None  # prefix sharing: the slot whose KV this one copies once it holds ``shared`` tokens
    shared: int = 0


class BatchEngine:
    """A second llama.cpp context on a loaded model's weights, for ``n_seq`` sequences at once."""

    def __init__(self, llama, n_seq: int, n_ctx_seq: int, n_threads: int, n_batch: int = 512, kv_unified: bool = False):
        import llama_cpp
        from llama_cpp import _internals as internals

        self.llama, self.n_seq, self.n_ctx_seq = llama, max(1, n_seq), n_ctx_seq
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        # One KV stream per sequence (kv_unified off), each of n_ctx_seq cells: a token attends only to its own
        # sequence's cells. With one unified stream every token's attention spans all cells in use (masked), which
        # at 16 sequences of ~400 tokens cost more than the weights: measured on 2 cores with the teacher, 24 vs 39
        # tok/s at 16 sequences, 27 vs 49 at 32 (``bench/generation.py --step-costs`` compares both layouts; only
        # it sets ``kv_unified``). llama.cpp splits a batch that mixes decode tokens and prompt chunks of different
        # sequences into equal-split ubatches by itself.
        params.n_ctx = self.n_seq * n_ctx_seq
        params.n_seq_max = self.n_seq
        params.kv_unified = kv_unified
        self.n_batch = max(n_batch, self.n_seq)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = n_threads
        self._context = internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self.ctx = self._context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        self._piece = (llama_cpp.ctypes.c_char * 64)()
        self._llama_cpp = llama_cpp
        self._internals = internals
        self._busy = threading.Lock()  # one decode loop at a time on this context, whichever thread asks
        self.prefilled = 0  # prompt tokens fed by ``score`` and ``generate`` (prefix sharing's saving shows here)

    def close(self) -> None:
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._context.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    # -- low level -------------------------------------------------------------------------------------------
    def _clear(self) -> None:
        self._llama_cpp.llama_memory_clear(self.memory, True)

    def _drop(self, seq_id: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        batch, i = self._batch, self._batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq_id, logits
        batch.n_tokens = i + 1
        return i

    def _decode(self) -> None:
        status = self._llama_cpp.llama_decode(self.ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} ({self._batch.n_tokens} tokens in the batch)")

    def logits(self, batch_index: int) -> np.ndarray:
        """The logits of one batch position of the last decode (a view: copy or reduce it before the next decode)."""
        pointer = self._llama_cpp.llama_get_logits_ith(self.ctx, batch_index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def _sampler(self, top_k: int, top_p: float, temperature: float, repeat_penalty: float, seed: int):
        # The chain Llama._init_sampler builds for create_chat_completion (min_p 0.05, typical 1.0, no frequency or
        # presence penalty), so a sequence decoded here samples as the single-sequence call would.
        sampler = self._internals.LlamaSampler()
        sampler.add_penalties(
            n_vocab=self.n_vocab,
            penalty_last_n=self.llama.last_n_tokens_size,
            penalty_repeat=repeat_penalty,
            penalty_freq=0.0,
            penalty_present=0.0,
        )
        if temperature == 0.0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(top_k)
            sampler.add_typical(1.0, 1)
            sampler.add_top_p(top_p, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed)
        return sampler

    def _token_bytes(self, token: int) -> bytes:
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            buffer = (self._llama_cpp.ctypes.c_char * -n)()
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
            return bytes(buffer[:n])
        return bytes(self._piece[:n])

    # -- generation ------------------------------------------------------------------------------------------
    def generate(
        self,
        requests: Iterable[CompletionRequest],
        *,
        top_k: int,
        top_p: float,
        temperature: float,
        repeat_penalty: float,
        seed: int,
        on_done: Callable[[int, Completion], None],
        share_prefixes: bool = False,
    ) -> None:
        """Answer every request with continuous batching; ``on_done(index, completion)`` as each one finishes.

        ``share_prefixes``: a prompt that begins like one already in the context (a task's system prompt, ALMoST's
        demonstrations) copies that start's KV from it (``llama_memory_seq_cp``) instead of prefilling it again;
        see ``resources/shared_prefill.py``."""
        llama_cpp = self._llama_cpp
        queue = deque(requests)
        for request in queue:
            if len(request.prompt) >= self.n_ctx_seq:
                raise ValueError(f"Requested tokens ({len(request.prompt)}) exceed context window of {self.n_ctx_seq}")
            # As create_completion: the answer may use what the context has left after the prompt.
            request.max_tokens = min(request.max_tokens, self.n_ctx_seq - len(request.prompt))
        slots: dict[int, _Slot] = {}
        with DECODE_LOCK, self._busy:
            self._clear()
            try:
                while queue or slots:
                    # Admit the next prompts while a sequence id (and so its KV stream) is free.
                    while queue and len(slots) < self.n_seq:
                        request = queue.popleft()
                        seq_id = min(set(range(self.n_seq)) - set(slots))
                        slot = _Slot(request, seq_id, self._sampler(top_k, top_p, temperature, repeat_penalty, seed))
                        if share_prefixes:
                            slot.source, slot.shared = pick_source(slot, slots.values())
                        slots[seq_id] = slot
                    take_shared(self, slots)
                    step_started, in_step = time.perf_counter(), list(slots.values())
                    sample_at = self._fill_batch(slots)
                    self._decode()
                    take_shared(self, slots)  # before sampling: a source may finish (and be dropped) in this step
                    for slot in in_step:  # the step's time, shared by the sequences in it (sampling is ~1% of it)
                        slot.share += (time.perf_counter() - step_started) / len(in_step)
                    for slot, batch_index in sample_at:
                        token = llama_cpp.llama_sampler_sample(slot.sampler.sampler, self.ctx, batch_index)
                        finished = self._advance(slot, token)
                        if finished is not None:
                            del slots[slot.seq_id]
                            self._drop(slot.seq_id)
                            slot.sampler.close()
                            on_done(slot.request.index, finished)
            finally:
                for slot in slots.values():
                    slot.sampler.close()
                self._clear()

    def _fill_batch(self, slots: dict[int, "_Slot"]) -> list[tuple["_Slot", int]]:
        """One step's batch: every decoding sequence's last token, then prompt chunks in the room left; returns
        (slot, batch index) of each logit row to sample from."""
        self._batch.n_tokens = 0
        sample_at: list[tuple[_Slot, int]] = []
        for slot in sorted(slots.values(), key=lambda s: s.seq_id):
            if slot.pending is not None:
                pos = len(slot.request.prompt) + len(slot.completion) - 1
                sample_at.append((slot, self._add(slot.pending, pos, slot.seq_id, True)))
                slot.pending = None
        room = self.n_batch - self._batch.n_tokens
        for slot in sorted(slots.values(), key=lambda s: s.seq_id):
            prompt = slot.request.prompt
            if slot.fed >= len(prompt) or room <= 0 or slot.source is not None:  # (waits to copy a shared start)
                continue
            chunk = prompt[slot.fed : slot.fed + room]
            for offset, token in enumerate(chunk):
                last = slot.fed + offset == len(prompt) - 1
                index = self._add(token, slot.fed + offset, slot.seq_id, last)
                if last:
                    sample_at.append((slot, index))
            slot.fed += len(chunk)
            room -= len(chunk)
            self.prefilled += len(chunk)
        return sample_at

    def _advance(self, slot: _Slot, token: int) -> Completion | None:
        """Take one sampled token; the finished answer, or None to go on (the rules of Llama._create_completion)."""
        request = slot.request
        finish, text = None, b""
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            finish, text = "stop", slot.text
        else:
            slot.completion.append(token)
            slot.text += self._token_bytes(token)
            all_text = slot.text
            for k, char in enumerate(all_text[-3:]):  # an incomplete UTF-8 character: do not test stops yet
                k = 3 - k
                for num, pattern in ((2, 192), (3, 224), (4, 240)):
                    if num > k and pattern & char == pattern:
                        slot.multibyte_fix = num - k
            if slot.multibyte_fix > 0:
                slot.multibyte_fix -= 1
            else:
                hits = [s.encode("utf-8") for s in request.stops if s.encode("utf-8") in all_text]
                if hits:
                    finish, text = "stop", all_text[: all_text.index(hits[0])]
                elif len(slot.completion) >= request.max_tokens:
                    finish, text = "length", all_text
            if finish is None and len(request.prompt) + len(slot.completion) >= self.n_ctx_seq:
                finish, text = "length", all_text
        if finish is None:
            slot.pending = token
            return None
        return Completion(
            text=text.decode("utf-8", errors="ignore"),
            finish_reason=finish,
            prompt_tokens=len(request.prompt),
            completion_tokens=len(slot.completion),
            seconds=slot.share,
        )

    # -- scoring ---------------------------------------------------------------------------------------------
    def score(
        self,
        sequences: Sequence[Sequence[int]],
        wanted: Sequence[range],
        on_logits: Callable[[int, int, np.ndarray], None],
        share_prefixes: bool = False,
    ) -> None:
        """Prefill every sequence, many per ``llama_decode``; ``on_logits(sequence, position, logits)`` for each
        position in ``wanted[sequence]`` (the logits at position p predict token p + 1; the array is a view).

        ``share_prefixes``: sequences that begin alike (a judge's instructions and the same request before each of
        many answers) are prefilled in waves of ``n_seq`` in sorted order, and each run of a wave that shares a
        prefix computes it once and copies its KV to the others (``llama_memory_seq_cp``); see ``resources/shared_prefill.py``."""
        for tokens in sequences:
            if not tokens:
                raise ValueError("cannot score an empty sequence")
            if len(tokens) > self.n_ctx_seq:
                raise ValueError(f"a sequence of {len(tokens)} tokens is longer than the context of {self.n_ctx_seq}")
        if share_prefixes:
            score_shared(self, sequences, wanted, on_logits)
            return
        queue = deque(range(len(sequences)))
        active: dict[int, _Prefill] = {}
        with DECODE_LOCK, self._busy:
            self._clear()
            try:
                while queue or active:
                    while queue and len(active) < self.n_seq:
                        index = queue.popleft()
                        seq_id = min(set(range(self.n_seq)) - set(active))
                        active[seq_id] = _Prefill(index, list(sequences[index]), wanted[index], seq_id)
                    self._prefill_step(active.values(), on_logits)
                    for job in [j for j in active.values() if j.fed >= len(j.tokens)]:
                        del active[job.seq_id]
                        self._drop(job.seq_id)
            finally:
                self._clear()

    def _prefill_step(self, jobs: Iterable[_Prefill], on_logits: Callable[[int, int, np.ndarray], None]) -> None:
        """One ``llama_decode``: each job's next tokens up to its ``until`` (all of them by default) in the room
        the batch has, logits only at wanted positions."""
        self._batch.n_tokens = 0
        outputs: list[tuple[_Prefill, int, int]] = []
        room, rows = self.n_batch, MAX_LOGIT_ROWS_PER_DECODE
        for job in sorted(jobs, key=lambda j: j.seq_id):
            until = len(job.tokens) if job.until is None else job.until
            while job.fed < until and room > 0:
                pos = job.fed
                wants = pos in job.wanted
                if wants and rows == 0:
                    break
                batch_index = self._add(job.tokens[pos], pos, job.seq_id, wants)
                if wants:
                    outputs.append((job, pos, batch_index))
                    rows -= 1
                job.fed += 1
                room -= 1
        self.prefilled += self._batch.n_tokens
        self._decode()
        for job, pos, batch_index in outputs:
            on_logits(job.index, pos, self.logits(batch_index))


_ENGINES: "OrderedDict[tuple, BatchEngine]" = OrderedDict()
MAX_ENGINES = 2  # evaluation walks through one model per checkpoint: keep the KV memory of the last two only


def batch_engine(llama, key: tuple, n_seq: int, n_ctx_seq: int, n_threads: int, n_batch: int = 512) -> BatchEngine:
    """One engine per (loaded model, settings) and process, like the loaded models themselves; the least recently
    used ones beyond MAX_ENGINES are closed, except those in use. Call it, and use the engine, while holding
    DECODE_LOCK (or some of its cores), so that no other thread closes an engine in use."""
    full_key = (*key, n_seq, n_ctx_seq, n_threads, n_batch)
    with _REGISTRY:
        engine = _ENGINES.get(full_key)
        if engine is None:
            engine = BatchEngine(llama, n_seq, n_ctx_seq, n_threads, n_batch)
            _ENGINES[full_key] = engine
        _ENGINES.move_to_end(full_key)
        DECODE_LOCK.touch(engine)
        busy = DECODE_LOCK.in_use()
        for old in [k for k, e in _ENGINES.items() if id(e) not in busy][: max(0, len(_ENGINES) - MAX_ENGINES)]:
            _ENGINES.pop(old).close()
        return engine


def close_engines() -> None:
    """Free every engine's context (at exit, while llama_cpp is still importable)."""
    with DECODE_LOCK, _REGISTRY:
        while _ENGINES:
            _, engine = _ENGINES.popitem()
            engine.close()
