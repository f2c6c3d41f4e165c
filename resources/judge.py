"""Scores read from a local model's log-probabilities: the LLM judge (P(Yes) after its question) and DLMA's
self-reward (an answer's log-probability under a positive against a negative system prompt). Every score is cached
in the call cache like a generation."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

import resources.threads  # noqa: F401  (first: sets OMP_WAIT_POLICY before llama_cpp is ever imported)
from resources.batched import DECODE_LOCK
from resources.hashing import call_key, content_hash
from resources.llm import load_llama
from resources.models import resolve_model
from resources.scorer import RewardScorer
from resources.stores import open_cache
from resources.threads import llama_threads


def chatml(messages: Sequence[dict]) -> str:
    """The ChatML prompt both packaged models use, ending with an open assistant turn."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _tokens(llama, text: str) -> list[int]:
    return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def continuation_logprob(llama, prefix: list[int], continuation: list[int]) -> float:
    """Sum of log p(continuation token | everything before it), from one batched eval; ``llama`` needs
    ``logits_all=True``. Prompt tokens are masked: only the continuation's tokens count."""
    if not continuation:
        return 0.0
    total = len(prefix) + len(continuation)
    if total > llama.n_ctx():
        raise ValueError(f"prompt and answer take {total} tokens, more than the context of {llama.n_ctx()}")
    if not prefix:
        raise ValueError("the prefix must hold at least one token (the chat template)")
    llama.reset()
    llama.eval(prefix + continuation)
    # Row i of scores predicts token i + 1.
    logits = np.asarray(llama.scores[len(prefix) - 1 : total - 1], dtype=np.float64)
    return float(_log_softmax(logits)[np.arange(len(continuation)), continuation].sum())


def next_token_logprobs(llama, prefix: list[int]) -> np.ndarray:
    """log p(next token | prefix) over the vocabulary, from the last logits (no logits_all needed)."""
    import llama_cpp

    llama.reset()
    llama.eval(prefix)
    pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
    logits = np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)
    return _log_softmax(logits)


class _LocalModel:
    """A judge model: its file, a loaded ``Llama`` (tokenizer, chat template, the unbatched reference path) and the
    batched-scoring context on the same weights."""

    def __init__(
        self, model: str, model_cache_dir: str, n_ctx: int, n_threads: int, logits_all: bool, batch_size: int = 8
    ):
        self.file = resolve_model(model, model_cache_dir)
        self.settings = (n_ctx, llama_threads(n_threads), 512, logits_all)
        self.batch_size = batch_size

    def llama(self):
        n_ctx, threads, batch, logits_all = self.settings
        return load_llama(self.file.path, n_ctx, threads, batch, logits_all)

    def engine(self):
        from resources.batched import batch_engine

        n_ctx, threads, batch, _ = self.settings
        return batch_engine(self.llama(), (str(self.file.path), "score"), self.batch_size, n_ctx, threads, batch)


class JudgeScorer(RewardScorer):
    """A local LLM judge: P(Yes) / (P(Yes) + P(No)) for the task's question, from the verdict token's probability.

    ``invert``: the reward is P(No) instead, for a question that asks about the bad thing ("Does the response give
    dangerous help?"). Small judges lean to Yes; asked "Is the response harmless?" the 1.5B teacher gave refusals
    0.17-0.28 and a phishing e-mail 0.58; asked the inverted question, refusals 0.65-0.80 and the e-mail 0.48."""

    name = "judge"
    SYSTEM = "You are a strict and fair judge of an AI assistant's answers. You answer only Yes or No."
    share_prefixes = True  # compute a shared prompt start once per run of a wave (bench/judge_sharing.py: off vs on)

    def __init__(self, cache_path: str, model: _LocalModel, question: str, invert: bool = False):
        super().__init__(cache_path)
        self.model, self.question, self.invert = model, question, invert

    def identity(self) -> str:
        return content_hash(
            "judge", self.model.file.sha256, self.SYSTEM, self.question, *(["invert"] if self.invert else [])
        )

    def score_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def verdict_tokens(self, llama) -> tuple[list[int], list[int]]:
        first = lambda words: sorted({_tokens(llama, w)[0] for w in words})  # noqa: E731
        return first(["Yes", " Yes", "yes", " yes", "YES"]), first(["No", " No", "no", " no", "NO"])

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = [0.5] * len(prompts)
        self._score_each(prompts, responses, scores.__setitem__)
        return scores

    def _score_each(self, prompts: list[str], responses: list[str], done) -> None:
        """All verdicts from batched prefills: many judge prompts per llama_decode, logits only at each last token,
        ``done(i, score)`` as each is read. The prompts share their start (the instructions; the request, for the
        answers of one request): the engine computes a shared start once per run of a wave (``share_prefixes``)."""
        llama = self.model.llama()
        yes, no = self.verdict_tokens(llama)
        prefixes = []
        for prompt, response in zip(prompts, responses):
            user = (
                f"{self.question}\n\nRequest: {prompt}\n\nResponse: {response}\n\n"
                f"{self.question} Answer with Yes or No."
            )
            prefix = _tokens(
                llama, chatml([{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": user}])
            )
            prefixes.append(
                prefix[-(llama.n_ctx() - 1) :]
            )  # a very long response loses its beginning, not the question

        def verdict(index: int, position: int, logits: np.ndarray) -> None:
            logprobs = _log_softmax(logits.astype(np.float64))
            p_yes, p_no = np.exp(logprobs[yes]).sum(), np.exp(logprobs[no]).sum()
            p = float(p_yes / (p_yes + p_no)) if p_yes + p_no > 0 else 0.5
            done(index, 1.0 - p if self.invert else p)

        wanted = [range(len(t) - 1, len(t)) for t in prefixes]
        with DECODE_LOCK:
            self.model.engine().score(prefixes, wanted, verdict, share_prefixes=self.share_prefixes)


class SelfRewardScorer:
    """DLMA's self-reward from one model's log-probabilities (prompt tokens masked):
    R = [log π(a1|p+,q) − log π(a1|p−,q)] − [log π(a2|p+,q) − log π(a2|p−,q)]."""

    def __init__(self, cache_path: str, model: _LocalModel):
        self.cache, self.model = open_cache(cache_path), model
        self.computed = 0

    def _key(self, system: str, query: str, answer: str) -> str:
        return call_key("logprob", self.model.file.sha256, system, query, answer)

    def logprob(self, system: str, query: str, answer: str) -> float:
        return self.logprobs([(system, query, answer)])[0]

    def logprobs(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """log π(answer | system, query) for each triple (prompt tokens masked), cache first; the missing ones from
        batched prefills, each committed as soon as its sequence is scored."""
        keys = [self._key(*triple) for triple in triples]
        found = {key: hit["logprob"] for key, hit in self.cache.get_many(list(dict.fromkeys(keys))).items()}
        todo = list(dict.fromkeys(key for key in keys if key not in found))
        if todo:
            llama = self.model.llama()
            by_key = dict(zip(keys, triples))
            sequences, starts, totals = [], [], []
            for key in todo:
                system, query, answer = by_key[key]
                prefix = _tokens(
                    llama, chatml([{"role": "system", "content": system}, {"role": "user", "content": query}])
                )
                continuation = _tokens(llama, answer + "<|im_end|>")
                if len(prefix) + len(continuation) > llama.n_ctx():
                    raise ValueError(
                        f"prompt and answer take {len(prefix) + len(continuation)} tokens, more than the "
                        f"context of {llama.n_ctx()}"
                    )
                sequences.append(prefix + continuation)
                starts.append(len(prefix))
                totals.append(0.0)
            remaining = [len(t) - s for t, s in zip(sequences, starts)]
            clock = [time.perf_counter()]  # each committed log-probability records the time since the one before

            def add(index: int, position: int, logits: np.ndarray) -> None:
                # Row p predicts token p + 1: the answer's tokens are sequences[index][starts[index]:].
                logprobs = _log_softmax(logits.astype(np.float64))
                totals[index] += float(logprobs[sequences[index][position + 1]])
                remaining[index] -= 1
                if remaining[index] == 0:
                    system, query, answer = by_key[todo[index]]
                    now = time.perf_counter()
                    self.cache.put(
                        todo[index],
                        "score",
                        self.model.file.sha256,
                        {"system": system, "query": query, "answer": answer},
                        {"logprob": totals[index]},
                        now - clock[0],
                    )
                    clock[0] = now
                    found[todo[index]] = totals[index]
                    self.computed += 1

            with DECODE_LOCK:
                self.model.engine().score(sequences, [range(s - 1, len(t) - 1) for t, s in zip(sequences, starts)], add)
        return [found[key] for key in keys]

    def self_reward(
        self, query: str, positive: str, negative: str, answer_positive: str, answer_negative: str
    ) -> float:
        return self.self_reward_many([query], positive, negative, [answer_positive], [answer_negative])[0]

    def self_reward_many(
        self,
        queries: Sequence[str],
        positive: str,
        negative: str,
        answers_positive: Sequence[str],
        answers_negative: Sequence[str],
    ) -> list[float]:
        triples = []
        for query, a1, a2 in zip(queries, answers_positive, answers_negative):
            triples += [(positive, query, a1), (negative, query, a1), (positive, query, a2), (negative, query, a2)]
        values = self.logprobs(triples)
        return [(values[i] - values[i + 1]) - (values[i + 2] - values[i + 3]) for i in range(0, len(values), 4)]
