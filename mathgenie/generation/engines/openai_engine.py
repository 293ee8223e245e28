"""An engine over any OpenAI-compatible server (``vllm serve``, SGLang, TGI, llama.cpp server, hosted APIs).

Prompts go to ``/completions``, conversations (`chat`) to ``/chat/completions`` with the server's chat template. Each
completion is its own HTTP request (``n=1``, seed ``seed + i`` for sample ``i``, vLLM's rule for ``n>1``), so usage
gives exact per-completion token counts and sampling matches the offline vLLM engine's. Requests run on a thread pool
of ``max_concurrency`` workers; the server does the batching. 429, 5xx, connection errors, timeouts and empty
responses are retried with exponential backoff and jitter (``Retry-After`` honoured); other 4xx fail at once with the
server's message.

Stop strings: the request asks the server to trim them, and the matched stop (vLLM ``stop_reason``, SGLang
``matched_stop``) is appended back when ``include_stop_str_in_output``. Servers that do not say which stop matched
(TGI, llama.cpp, OpenAI) give ``stop_reason=None`` and text without the stop string. ``vllm_extensions`` (default on)
also sends ``skip_special_tokens=false`` so stops made of special tokens match; turn it off for servers that reject
unknown fields.

The API key (``api_key=`` or ``$OPENAI_API_KEY``) lives only in the HTTP client's headers; it is never logged.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import random
import time

import httpx
from tqdm.auto import tqdm

from mathgenie.generation.engine import Completion, Engine, ModelSpec, SamplingParams
from mathgenie.generation.engines import render_chat

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIServerError(RuntimeError):
    """The server rejected a request, or kept failing after all retries."""


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        served_model_name: str | None = None,
        max_concurrency: int = 32,
        max_retries: int = 6,
        timeout: float = 600.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        vllm_extensions: bool = True,
        extra_body: dict | None = None,
        poll_timeout: float = 1.0,
        use_tqdm: bool = False,
    ):
        """``base_url`` is the API root including ``/v1`` (default ``$OPENAI_BASE_URL`` or ``spec.extra["base_url"]``);
        the model name sent is ``served_model_name`` or ``spec.model``."""
        super().__init__(spec)
        base_url = base_url or spec.extra.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError(
                "OpenAIEngine needs the server's API root: pass base_url='http://host:port/v1' "
                "(or set OPENAI_BASE_URL, or ModelSpec.extra['base_url'])"
            )
        self.base_url = base_url.rstrip("/")
        self.model_name = served_model_name or spec.model
        self.model_path, self.revision = None, spec.revision  # the server owns the weights
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.vllm_extensions = vllm_extensions
        self.extra_body = dict(extra_body or {})
        self.poll_timeout = poll_timeout
        self.use_tqdm = use_tqdm
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = cf.ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-engine")
        self._inflight: dict[cf.Future, str] = {}
        self._tokenizer = None

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model_name!r})"

    # -- batch API ----------------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return self._run([{"prompt": p} for p in prompts], params, "/completions")

    def chat(self, conversations: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        """Conversations go to ``/chat/completions``: the server applies its chat template."""
        return self._run([{"messages": c} for c in conversations], params, "/chat/completions")

    def apply_chat_template(self, messages: list[dict]) -> str:
        if self._tokenizer is None:
            if not self.spec.tokenizer:
                raise ValueError(
                    "OpenAIEngine renders chat templates on the server: use engine.chat(...), or set "
                    "ModelSpec.tokenizer to a local tokenizer to render prompts here"
                )
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.spec.tokenizer)
        return render_chat(self._tokenizer, messages)

    # -- continuous API -----------------------------------------------------------------------------------------------
    def submit(self, request_id: str, prompt: str, params: SamplingParams) -> None:
        if params.n != 1:
            raise ValueError(f"submit() takes one completion per request; got n={params.n}")
        future = self._pool.submit(self._request, "/completions", {"prompt": prompt}, params, params.seed)
        self._inflight[future] = request_id

    def poll(self) -> list[tuple[str, Completion]]:
        """Requests that finished since the last call; waits up to ``poll_timeout`` s for the first one."""
        if not self._inflight:
            return []
        done, _ = cf.wait(list(self._inflight), timeout=self.poll_timeout, return_when=cf.FIRST_COMPLETED)
        return [(self._inflight.pop(f), f.result()) for f in done]

    def has_unfinished(self) -> bool:
        return bool(self._inflight)

    def close(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- internals ----------------------------------------------------------------------------------------------------
    def _run(self, inputs: list[dict], params: SamplingParams, path: str) -> list[list[Completion]]:
        results: list[list[Completion | None]] = [[None] * params.n for _ in inputs]
        futures = {}
        for i, payload in enumerate(inputs):
            for j in range(params.n):
                seed = None if params.seed is None else params.seed + j
                futures[self._pool.submit(self._request, path, payload, params, seed)] = (i, j)
        try:
            for future in tqdm(cf.as_completed(futures), total=len(futures), desc=f"POST {path}",
                               disable=not self.use_tqdm, leave=False):
                i, j = futures[future]
                results[i][j] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results  # type: ignore[return-value]

    def _request(self, path: str, payload: dict, params: SamplingParams, seed: int | None) -> Completion:
        body = {
            "model": self.model_name,
            **payload,
            "n": 1,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        if self.vllm_extensions:
            body["skip_special_tokens"] = False
        body.update(self.extra_body)
        data = self._post(path, body)
        choice = data["choices"][0]
        text = choice.get("text")
        if text is None:
            text = (choice.get("message") or {}).get("content") or ""
        stop = choice.get("stop_reason", choice.get("matched_stop"))
        stop = stop if isinstance(stop, str) and stop in params.stop else None
        if stop is not None and params.include_stop_str_in_output and not text.endswith(stop):
            text += stop
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            stop_reason=stop,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    def _post(self, path: str, body: dict) -> dict:
        error = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                response = self._client.post(path, json=body)
            except httpx.TransportError as e:  # refused/reset connections, timeouts, protocol errors
                error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                    except ValueError:
                        data = None
                    if isinstance(data, dict) and data.get("choices"):
                        return data
                    error = f"empty or malformed response: {response.text[:200]!r}"
                elif response.status_code in RETRY_STATUS or response.status_code >= 500:
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
                    wait = _retry_after(response, self.max_backoff)
                else:
                    raise OpenAIServerError(
                        f"POST {self.base_url}{path} (model {self.model_name!r}) failed with HTTP "
                        f"{response.status_code}: {response.text[:1000]}"
                    )
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
            logger.warning(
                "POST %s%s failed (%s); retry %d/%d in %.1f s", self.base_url, path, error, attempt + 1,
                self.max_retries, wait,
            )
            time.sleep(wait)
        raise OpenAIServerError(
            f"POST {self.base_url}{path} failed after {self.max_retries + 1} attempts; last error: {error}"
        )


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(cap, max(0.0, float(value))) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None
