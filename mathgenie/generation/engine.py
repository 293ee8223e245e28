"""The one narrow interface every generation engine implements (vLLM offline, transformers, OpenAI-compatible HTTP).

Two ways to drive an engine:
- ``generate(prompts, params)``: a batch in, ``n`` completions per prompt out (augment, back-translate).
- ``submit(request_id, prompt, params)`` + ``poll()``: continuous batching for the LCE loop. A solution whose code block
  just closed is run in the Sandbox while the engine keeps decoding the others, then re-submitted with the execution
  appended. The default implementation batches everything pending on each ``poll``; vLLM overrides it with its own
  scheduler (``LLMEngine.add_request``/``step``).

Prompts are raw strings (already rendered with a chat template or the LCE format); ``chat()`` renders messages with the
model's tokenizer chat template first.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    include_stop_str_in_output: bool = True  # the LCE loop needs to see which of <|endofblock|>/<|endofmessage|> hit
    seed: int | None = 0

    def key(self) -> str:
        """Stable text of the parameters, for request-cache keys."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    stop_reason: str | None = None  # the stop string that ended it, if any
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ModelSpec:
    """A model: a Hub repo id (+ revision) or a local path. ``gguf_file`` for a GGUF checkpoint (converted to a
    normal checkpoint on first load, see `mathgenie.generation.models`)."""

    model: str
    revision: str | None = None
    gguf_file: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int = 4096
    extra: dict = field(default_factory=dict)  # engine-specific keyword arguments

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def request_key(model: ModelSpec, prompt: str, params: SamplingParams, salt: str = "") -> str:
    """Hash of everything that determines a request's output: model + revision, prompt, sampling, and a salt
    (e.g. the sample index). The request cache of the pipeline is keyed by it."""
    h = hashlib.sha256()
    for part in (model.key(), prompt, params.key(), salt):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class Engine(abc.ABC):
    """Base class of all engines."""

    name: str = "base"

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._pending: dict[str, tuple[str, SamplingParams]] = {}

    # -- batch API ----------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in order."""

    def chat(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        """Render each conversation with the model's chat template (generation prompt added), then `generate`."""
        return self.generate([self.apply_chat_template(c) for c in conversations], params)

    @abc.abstractmethod
    def apply_chat_template(self, messages: list[dict]) -> str:
        ...

    # -- continuous API -----------------------------------------------------------------------------------------------
    def submit(self, request_id: str, prompt: str, params: SamplingParams) -> None:
        """Queue one request (``params.n`` should be 1 here; one request per live solution)."""
        self._pending[request_id] = (prompt, params)

    def poll(self) -> list[tuple[str, Completion]]:
        """Advance generation; return the requests that finished since the last call (possibly none). Everything
        pending is generated now, requests that differ only in their seed together (`generate_seeded`)."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, {}
        groups: dict[SamplingParams, list[str]] = {}
        for rid, (_, params) in pending.items():
            groups.setdefault(replace(params, seed=None), []).append(rid)
        finished = []
        for params, rids in groups.items():
            outs = self.generate_seeded([pending[r][0] for r in rids], params, [pending[r][1].seed for r in rids])
            finished.extend((rid, out[0]) for rid, out in zip(rids, outs))
        return finished

    def generate_seeded(self, prompts: list[str], params: SamplingParams, seeds: list[int | None]
                        ) -> list[list[Completion]]:
        """`generate` with one seed per prompt (``params.seed`` is ignored). This default makes one `generate` call
        per distinct seed; an engine that seeds each row itself batches them all (transformers)."""
        out: list[list[Completion] | None] = [None] * len(prompts)
        by_seed: dict[int | None, list[int]] = {}
        for i, seed in enumerate(seeds):
            by_seed.setdefault(seed, []).append(i)
        for seed, indices in by_seed.items():
            for i, completions in zip(indices, self.generate([prompts[i] for i in indices],
                                                             replace(params, seed=seed))):
                out[i] = completions
        return out  # type: ignore[return-value]

    def has_unfinished(self) -> bool:
        return bool(self._pending)

    def close(self) -> None:
        """Free the model (GPU/CPU memory, worker processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
