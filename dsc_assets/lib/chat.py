"""Chat messages: the one place that turns a task's templates into the messages a model is sent. The call cache's
keys are made from these messages, so a change here changes every key (the identity test notices)."""

from __future__ import annotations

from dsc_assets.lib.tasks import Task


class ChainMessages:
    """The one place that turns a task's templates into chat messages, for the assets and for `dsc plan`'s replay."""

    def __init__(self, task: Task):
        self.spec = task.spec
        self.system = {"role": "system", "content": task.spec.system_prompt}

    def draft(self, prompt: str) -> list[dict]:
        return [self.system, user_message(prompt)]

    def critique(self, prompt: str, response: str) -> list[dict]:
        return [self.system, user_message(self.spec.critique_template.format(prompt=prompt, response=response))]

    def revision(self, prompt: str, response: str, critique: str) -> list[dict]:
        content = self.spec.revision_template.format(prompt=prompt, response=response, critique=critique)
        return [self.system, user_message(content)]

    def contrastive(self, prompt: str, affix: str, examples: list[tuple[str, str]] = ()) -> list[dict]:
        """The request under the system prompt with ``affix`` (DLMA's contrast, ALMoST's better-prompted
        configurations), after ``examples`` (prompt, answer) as earlier turns."""
        system = {"role": "system", "content": f"{self.spec.system_prompt} {affix}".strip()}
        turns = [message for shown, answer in examples for message in (user_message(shown), assistant_message(answer))]
        return [system, *turns, user_message(prompt)]

    def answered(self, prompt: str, answer: str) -> list[dict]:
        """A draft's request with its answer: one SFT conversation (system, user, assistant)."""
        return [*self.draft(prompt), assistant_message(answer)]


def user_message(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant_message(content: str) -> dict:
    return {"role": "assistant", "content": content}
