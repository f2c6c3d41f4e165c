"""The prompt tokens and stop strings of a chat request, exactly as ``llama.create_chat_completion`` makes them: the
batched engine (``resources/batched.py``) feeds these tokens itself."""

from __future__ import annotations

from typing import Any, Sequence


class _Captured(Exception):
    def __init__(self, kwargs: dict[str, Any]):
        super().__init__("captured")
        self.kwargs = kwargs


class _PromptCapture:
    """Stands in for a Llama inside its chat handler: the handler renders the chat template and tokenizes exactly as
    ``create_chat_completion`` does, then calls ``create_completion``, where we stop and keep the prompt tokens and the
    stop strings it asked for (the user's plus the template's)."""

    def __init__(self, llama):
        self._llama = llama

    def __getattr__(self, name: str):
        return getattr(self._llama, name)

    def create_completion(self, **kwargs):
        raise _Captured(kwargs)


def chat_prompt(llama, messages: Sequence[dict], stop: Sequence[str] = ()) -> tuple[list[int], list[str]]:
    """Prompt tokens and stop strings of a chat request, as ``llama.create_chat_completion`` would make them."""
    from llama_cpp import llama_chat_format

    handler = (
        llama.chat_handler
        or llama._chat_handlers.get(llama.chat_format)
        or llama_chat_format.get_chat_completion_handler(llama.chat_format)
    )
    try:
        handler(llama=_PromptCapture(llama), messages=list(messages), stop=list(stop) or None)
    except _Captured as captured:
        stops = captured.kwargs.get("stop") or []
        return list(captured.kwargs["prompt"]), [stops] if isinstance(stops, str) else list(stops)
    raise RuntimeError(f"the chat handler of {llama.chat_format!r} did not ask for a completion")
