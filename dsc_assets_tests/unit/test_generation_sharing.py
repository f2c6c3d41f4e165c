"""Generation with shared prompt starts (``BatchEngine.generate(share_prefixes=True)``) on the real 135M model: a
prompt that begins like one already in the context copies that start's KV instead of prefilling it again."""

from __future__ import annotations

from resources.batched import CompletionRequest, batch_engine
from resources.decode_budget import DECODE_LOCK
from resources.llm import load_llama
from resources.models import resolve_model

DEMONSTRATIONS = (
    "You write short film reviews. Example: The Long Road is a warm, funny film with a great cast. "
    "Example: Night Train moves fast and the ending surprised me. Now write a review of "
)
FILMS = ["Blue River.", "The Last Garden.", "Paper Moon.", "City of Glass.", "Small Hours.", "Iron Coast."]


def _generate(engine, prompts: list[list[int]], share: bool, max_tokens: int, temperature: float):
    texts: dict[int, str] = {}
    fed = engine.prefilled
    engine.generate(
        [CompletionRequest(i, list(p), [], max_tokens) for i, p in enumerate(prompts)],
        top_k=40,
        top_p=0.95,
        temperature=temperature,
        repeat_penalty=1.0,
        seed=3,
        on_done=lambda index, completion: texts.__setitem__(index, completion.text),
        share_prefixes=share,
    )
    return texts, engine.prefilled - fed


def test_shared_starts_are_copied_not_prefilled_and_each_prompt_still_gets_its_own_answer(tmp_path):
    llama = load_llama(resolve_model("smollm2-135m", str(tmp_path / "models")).path, 1024, 2, 512, False)
    start = llama.tokenize(DEMONSTRATIONS.encode())
    prompts = [llama.tokenize((DEMONSTRATIONS + film).encode()) for film in FILMS]
    prompts.append(llama.tokenize(b"A prompt that shares no start with the others at all."))
    with DECODE_LOCK:
        engine = batch_engine(llama, ("test", "generate"), 3, 1024, 2, 512)  # 7 prompts through 3 slots
        first = {share: _generate(engine, prompts, share, 1, 0.0) for share in (False, True)}
        sampled = [_generate(engine, prompts, True, 16, 0.9) for _ in range(2)]
    (plain, plain_fed), (shared, shared_fed) = first[False], first[True]
    assert sorted(plain) == sorted(shared) == list(range(len(prompts)))
    assert plain_fed == sum(len(p) for p in prompts)
    assert shared_fed < plain_fed
    # answering 16 tokens, some slot holds the demonstrations whenever a film prompt is admitted (with the first, or
    # later as slots free up, from a slot that holds them or will once its own copy is made): each copies them
    assert all(plain_fed - fed >= (len(FILMS) - 1) * (len(start) - 2) for _, fed in sampled), (sampled, len(start))
    assert shared == plain, "each prompt's first greedy token is its own, from its own last prompt token"
    assert sampled[0] == sampled[1]  # the same draws every time
    assert len(set(sampled[0][0].values())) == len(prompts)
