"""The request cache that makes every stage crash-safe, and the loop that runs text requests through it.

A request is keyed by `engine.request_key` (a hash of the model + revision, the prompt, the sampling parameters
including the per-request seed). Finished completions are appended to a JSONL file, flushed and fsync'd after every
batch the engine returns, so a ``kill -9`` loses only requests that were still being generated. On restart all cache
files of the stage are read (every shard's, so a rerun with another ``--shard`` count still hits), a torn last line
is cut off, and cached requests are answered without touching the engine. A request is therefore generated at most
once per output directory.

Sampling seeds: sample ``k`` of every row is drawn with seed ``derive_seed(random_seed, k)``. With the prompt (which
holds the row's content) this fixes the output, independent of batch order and of sharding. The row id is
deliberately *not* part of the seed: requests that share a seed also share `SamplingParams`, so engines that batch by
parameters (the default `Engine.poll`) still batch a whole stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from mathgenie.generation.engine import Completion, Engine, SamplingParams, request_key
from mathgenie.generation.funnel import StageStats

logger = logging.getLogger(__name__)


def derive_seed(random_seed: int, *parts: object) -> int:
    """A 31-bit sampling seed from the global seed and e.g. the sample index."""
    h = hashlib.sha256(json.dumps([random_seed, *[str(p) for p in parts]]).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def sample_params(params: SamplingParams, random_seed: int, k: int) -> SamplingParams:
    """``params`` for sample ``k``: one completion, its own seed."""
    return replace(params, n=1, seed=derive_seed(random_seed, k))


class RequestCache:
    """Append-only JSONL cache of completions. ``path`` is written; every ``*.jsonl`` in ``read_dir`` is read."""

    def __init__(self, path: str | Path, read_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, Completion] = {}
        files = sorted(Path(read_dir).glob("*.jsonl")) if read_dir is not None else []
        if self.path not in files:
            files.append(self.path)
        for file in files:
            self._load(file, repair=file == self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self.hits = 0
        self.writes = 0

    def _load(self, file: Path, *, repair: bool) -> None:
        if not file.exists():
            return
        data = file.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a record cut by a kill: drop it (and cut it off our own file before appending)
            logger.warning("request cache %s: dropping a torn last record (%d bytes)", file, len(data) - end)
            if repair:
                with open(file, "r+b") as f:
                    f.truncate(end)
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            key = rec.pop("key")
            self._data[key] = Completion(**rec)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> Completion | None:
        c = self._data.get(key)
        if c is not None:
            self.hits += 1
        return c

    def put_many(self, items: Iterable[tuple[str, Completion]]) -> None:
        lines = []
        for key, c in items:
            if key in self._data:
                continue
            self._data[key] = c
            lines.append(json.dumps({"key": key, "text": c.text, "finish_reason": c.finish_reason,
                                     "stop_reason": c.stop_reason, "prompt_tokens": c.prompt_tokens,
                                     "completion_tokens": c.completion_tokens}, ensure_ascii=False) + "\n")
        if lines:
            self._file.write("".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
            self.writes += len(lines)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Request:
    prompt: str
    params: SamplingParams
    key: str = ""


def make_request(engine: Engine, prompt: str, params: SamplingParams) -> Request:
    return Request(prompt, params, request_key(engine.spec, prompt, params))


def run_requests(engine: Engine, requests: list[Request], *, cache: RequestCache | None = None,
                 stats: StageStats | None = None, max_in_flight: int = 256, desc: str = "generate") -> list[Completion]:
    """One completion per request, in order. Cached requests are answered from ``cache``; the rest go through the
    engine's continuous API (at most ``max_in_flight`` at once, topped up as requests finish) and are cached as soon
    as the engine returns them. Requests with equal keys are generated once. A request the engine refuses (a
    ``ValueError`` from ``submit``, e.g. a prompt longer than the context) gets an empty completion with
    ``finish_reason="rejected"``, which the stages drop (reason ``rejected``); it is not cached."""
    stats = stats if stats is not None else StageStats()
    by_key: dict[str, Completion] = {}
    todo: dict[str, Request] = {}
    for r in requests:
        if r.key in by_key or r.key in todo:
            continue
        hit = cache.get(r.key) if cache is not None else None
        if hit is not None:
            by_key[r.key] = hit
        else:
            todo[r.key] = r
    cached_keys = set(by_key)
    queue = list(todo.values())
    with tqdm(total=len(by_key) + len(queue), initial=len(by_key), desc=desc, unit="req", leave=False) as bar:
        next_i, in_flight = 0, 0
        while next_i < len(queue) or in_flight:
            while next_i < len(queue) and in_flight < max_in_flight:
                r = queue[next_i]
                next_i += 1
                try:
                    engine.submit(r.key, r.prompt, r.params)
                except ValueError as e:  # refused by the engine (e.g. longer than the context): not cached
                    logger.warning("request refused by the engine: %s", e)
                    by_key[r.key] = Completion("", "rejected")
                    bar.update(1)
                    continue
                in_flight += 1
            finished = engine.poll()
            if not finished and not engine.has_unfinished() and in_flight:
                raise RuntimeError(f"{type(engine).__name__} lost {in_flight} submitted requests (poll returned "
                                   "nothing and has_unfinished() is False)")
            for key, completion in finished:
                by_key[key] = completion
                in_flight -= 1
            if cache is not None and finished:
                cache.put_many(finished)
            bar.update(len(finished))
    out, counted = [], set(cached_keys)
    for r in requests:
        c = by_key[r.key]
        stats.add_completion(c, cached=r.key in counted)  # a repeated request counts as cached after its first use
        counted.add(r.key)
        out.append(c)
    return out
