"""transformers ``generate`` engine, batched: the fallback where vLLM is not installed, and the fast engine for tiny
test models.

Prompts are sorted by length (longest first, so an out-of-memory shows on the first batch) and padded on the left in
batches of ``batch_size`` prompts; each prompt is repeated ``n`` times in its batch. Stop strings end a row through
transformers' ``StopStringCriteria``; the text is then cut at the stop and ``stop_reason`` set.

Sampling is per row and seeded per row: ``generate`` runs greedy decoding over logits that `SeededGumbelSampler` has
tempered, top-p filtered and perturbed with Gumbel noise from the row's own ``torch.Generator`` (Gumbel-max: the argmax
is a sample from the filtered softmax). Row ``i`` of a prompt uses seed ``seed + i``, like vLLM, so a (prompt, params,
seed) gives the same completion in any batch, up to batch-dependent numerics (padding changes matmul shapes, which can
flip a near-tie in bfloat16). ``seed=None`` draws fresh seeds.
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, TopPLogitsWarper

from mathgenie.generation.engine import Completion, Engine, ModelSpec, SamplingParams
from mathgenie.generation.engines import cut_at_stop, render_chat
from mathgenie.generation.models import resolve

logger = logging.getLogger(__name__)


class SeededGumbelSampler(LogitsProcessor):
    """A logits processor that makes greedy decoding sample: temperature, top-p, then Gumbel noise from one
    generator per row."""

    def __init__(self, seeds: list[int | None], temperature: float, top_p: float, device):
        self.generators = []
        for seed in seeds:
            g = torch.Generator(device=device)
            if seed is None:
                g.seed()
            else:
                g.manual_seed(seed)
            self.generators.append(g)
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids, scores):
        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        return scores - torch.log(-torch.log(u.clamp_(min=1e-20)))


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        batch_size: int = 16,
        device: str | None = None,
        use_tqdm: bool = False,
        **model_kwargs,
    ):
        """``model_kwargs`` (and ``spec.extra``) go to ``AutoModelForCausalLM.from_pretrained`` (e.g.
        ``attn_implementation``)."""
        super().__init__(spec)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = resolve(spec)
        self.model_path, self.revision = resolved.path, resolved.revision
        self.batch_size = batch_size
        self.use_tqdm = use_tqdm
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or self.model_path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs = {"dtype": spec.dtype, **spec.extra, **model_kwargs}
        logger.info("loading %s with transformers on %s (%s)", self.model_path, self.device, kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = {e for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        self.pad_id = self.tokenizer.pad_token_id

    def apply_chat_template(self, messages: list[dict]) -> str:
        return render_chat(self.tokenizer, messages)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return self.generate_seeded(prompts, params, [params.seed] * len(prompts))

    def generate_seeded(self, prompts: list[str], params: SamplingParams, seeds: list[int | None]
                        ) -> list[list[Completion]]:
        """All prompts batched whatever their seeds (each row keeps its own generator), so the LCE loop's
        one-seed-per-solution requests do not run one at a time."""
        if not prompts:
            return []
        encoded = self.tokenizer(list(prompts))["input_ids"]
        for i, ids in enumerate(encoded):
            if len(ids) >= self.spec.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens, not less than max_model_len={self.spec.max_model_len}; "
                    "shorten it or raise ModelSpec.max_model_len"
                )
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[list[Completion] | None] = [None] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="transformers generate", disable=not self.use_tqdm, leave=False):
            completions = self._generate_batch([encoded[i] for i in batch], [seeds[i] for i in batch], params)
            for i, row in zip(batch, completions):
                results[i] = row
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], seeds: list[int | None], params: SamplingParams
                        ) -> list[list[Completion]]:
        from transformers import GenerationConfig, LogitsProcessorList

        n = params.n
        rows = [ids for ids in batch for _ in range(n)]
        caps = [min(params.max_tokens, self.spec.max_model_len - len(ids)) for ids in rows]
        inputs = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        config = GenerationConfig(
            max_new_tokens=max(caps),
            do_sample=False,  # sampling happens in SeededGumbelSampler; greedy takes its argmax
            num_beams=1,
            temperature=1.0,
            top_p=1.0,
            repetition_penalty=1.0,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids),
            stop_strings=list(params.stop) or None,
        )
        processors = LogitsProcessorList()
        if params.temperature > 0:
            row_seeds = [None if seed is None else seed + j for seed in seeds for j in range(n)]
            processors.append(SeededGumbelSampler(row_seeds, params.temperature, params.top_p, self.device))
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, generation_config=config, logits_processor=processors, tokenizer=self.tokenizer
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :].tolist()
        completions = [
            self._completion(tokens[:cap], len(row), params) for tokens, cap, row in zip(new_tokens, caps, rows)
        ]
        return [completions[k * n : (k + 1) * n] for k in range(len(batch))]

    def _completion(self, tokens: list[int], prompt_tokens: int, params: SamplingParams) -> Completion:
        # A finished row is padded to the batch's length; with pad == eos the first EOS/pad ends the content.
        end = next((k for k, t in enumerate(tokens) if t in self.eos_ids or t == self.pad_id), None)
        body = tokens if end is None else tokens[:end]
        text, stop = cut_at_stop(
            self.tokenizer.decode(body, skip_special_tokens=False), params.stop, params.include_stop_str_in_output
        )
        if stop is not None:  # StopStringCriteria ended the row on the token that completed the stop string
            finish, count = "stop", len(body)
        elif end is not None and tokens[end] in self.eos_ids:
            finish, count = "stop", end + 1
        else:
            finish, count = "length", len(body)
        return Completion(text, finish, stop, prompt_tokens=prompt_tokens, completion_tokens=count)
