"""ALMoST's trained reward model as a scorer: loaded once per folder and process, every score cached like every
other model call (key: the reward model's version, the chat, the answer)."""

from __future__ import annotations

import functools
import time

from resources.hashing import call_key
from resources.hf import quiet_progress
from resources.stores import open_cache


class RewardModelScorer:
    """Scores (prompt messages, answer) with a reward model folder written by ``train_reward_model`` (merged)."""

    def __init__(self, model_dir: str, batch_size: int = 8):
        quiet_progress()
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size

    def score(self, prompts: list[list[dict]], answers: list[str]) -> list[float]:
        """The scalar reward of each answer after its prompt, formatted as in training (the chat template)."""
        import torch
        from trl.data_utils import _tokenize

        ids = [
            _tokenize(self.tokenizer, list(p) + [{"role": "assistant", "content": a}])["input_ids"]
            for p, a in zip(prompts, answers)
        ]
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(ids), self.batch_size):
                batch = self.tokenizer.pad({"input_ids": ids[start : start + self.batch_size]}, return_tensors="pt")
                scores += self.model(**batch).logits.squeeze(-1).float().tolist()
        return scores


@functools.lru_cache(maxsize=2)
def reward_scorer(model_dir: str) -> RewardModelScorer:
    """One loaded reward model per folder and process: best-of-N scores prompt after prompt, evaluation model after
    model, and loading the classifier costs more than scoring a handful of answers."""
    return RewardModelScorer(model_dir)


def cached_scores(
    cache_path: str, version: str, model_dir: str, prompts: list[list[dict]], answers: list[str]
) -> list[float]:
    """Reward-model scores of (prompt messages, answer), from the call cache where they were computed before."""
    cache = open_cache(cache_path)
    identity = f"reward_model:{version}"
    keys = [call_key("score", identity, p, a) for p, a in zip(prompts, answers)]
    found = cache.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in found]
    if missing:
        started = time.perf_counter()
        values = reward_scorer(model_dir).score([prompts[i] for i in missing], [answers[i] for i in missing])
        seconds = (time.perf_counter() - started) / len(missing)
        for i, value in zip(missing, values):
            found[keys[i]] = {"score": value}
            cache.put(
                keys[i], "score", identity, {"messages": prompts[i], "answer": answers[i]}, {"score": value}, seconds
            )
    return [float(found[key]["score"]) for key in keys]
