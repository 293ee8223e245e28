"""A scripted engine for control-flow unit tests of the stages (never for behaviour that a real model decides).

``respond(prompt, params) -> str`` makes each completion; stop strings are applied like vLLM does with
``include_stop_str_in_output=True``. Deterministic when ``respond`` is, so it also serves the sharding test.
"""

from __future__ import annotations

import threading

from mathgenie.generation.engine import Completion, Engine, ModelSpec, SamplingParams


class ScriptedEngine(Engine):
    name = "scripted"

    def __init__(self, respond, model: str = "scripted", per_poll: int | None = None):
        super().__init__(ModelSpec(model))
        self.respond = respond
        self.per_poll = per_poll  # finish at most this many requests per poll (continuous-batching tests)
        self.prompts: list[str] = []  # every prompt generated, in order
        self.polls = 0
        self.lock = threading.Lock()

    def apply_chat_template(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    def complete(self, prompt: str, params: SamplingParams) -> Completion:
        text = self.respond(prompt, params)
        self.prompts.append(prompt)
        finish, stop_reason = "stop", None
        hits = [(text.find(s), s) for s in params.stop if s in text]
        if hits:
            pos, stop = min(hits)
            text, stop_reason = text[: pos + len(stop)], stop
        words = text.split()
        if len(words) > params.max_tokens:
            text, finish = " ".join(words[: params.max_tokens]), "length"
        return Completion(text, finish, stop_reason, len(prompt.split()), len(text.split()))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return [[self.complete(p, params) for _ in range(params.n)] for p in prompts]

    def poll(self):
        self.polls += 1
        if self.per_poll is None:
            return super().poll()
        items = list(self._pending.items())[: self.per_poll]
        for rid, _ in items:
            del self._pending[rid]
        return [(rid, self.complete(prompt, params)) for rid, (prompt, params) in items]
