"""The public checks: `is_equivalent` for one pair, `check_batch` for many (fast paths here, the rest on the pool)."""

from __future__ import annotations

import logging
from typing import Iterable

from mathgenie.answers.compare import fast_verdict, math_verify_equal
from mathgenie.answers.pool import default_num_workers, shared_pool

logger = logging.getLogger(__name__)

_PAIRS_PER_NEW_WORKER = 32
_MAX_ANSWER_CHARS = 1000  # longer "answers" are runaway generations: compared as strings only


def _cheap(pred: str | None, gold: str | None) -> bool | None:
    if pred is not None and max(len(pred), len(gold or "")) > _MAX_ANSWER_CHARS:
        return pred.strip() == (gold or "").strip()
    try:
        return fast_verdict(pred, gold)
    except Exception:  # never let a fast-path bug decide: math-verify gets the pair
        logger.debug("fast path failed on %r vs %r", pred, gold, exc_info=True)
        return None


def is_equivalent(pred: str | None, gold: str, *, timeout: float | None = 5.0) -> bool:
    """Whether the predicted final answer ``pred`` equals the reference ``gold``.

    Cheap exact paths decide most pairs in microseconds (see `mathgenie.answers.compare`); the rest go to math-verify
    in a worker process that is killed after ``timeout`` seconds (the pair then counts as not equal). Safe to call
    from any thread and from inside worker processes. ``timeout=None`` runs math-verify in this process with no time
    limit. ``None`` as ``pred`` (nothing extracted) is never equal.
    """
    verdict = _cheap(pred, gold)
    if verdict is not None:
        return verdict
    if timeout is None:
        return math_verify_equal(pred, gold)
    return shared_pool().run([(pred, gold)], timeout=timeout, num_workers=1)[0]


def check_batch(
    pairs: Iterable[tuple[str | None, str]], *, num_workers: int | None = None, timeout: float | None = 5.0
) -> list[bool]:
    """`is_equivalent` for each ``(pred, gold)`` pair, in order.

    Duplicate pairs are checked once, the fast paths run in this process, and only the remaining pairs go to
    at most ``num_workers`` math-verify processes (default: the CPUs this process may use, at most 8; one more per
    32 such pairs), each pair with its own ``timeout``. The first worker starts as soon as the first such pair is
    found; workers stay up for later calls (`mathgenie.answers.shutdown` stops them).
    """
    pairs = list(pairs)
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and (pair[0] is None or isinstance(pair[0], str))
                and isinstance(pair[1], str)):
            raise TypeError(f"pairs[{i}] = {pair!r:.100} is not a (pred: str | None, gold: str) tuple")
    num_workers = num_workers or default_num_workers()
    unique = dict.fromkeys(pairs)
    hard = []
    for pair in unique:
        unique[pair] = _cheap(*pair)
        if unique[pair] is None:
            if not hard and timeout is not None:
                shared_pool().start(1)  # it imports sympy while we finish the fast paths
            hard.append(pair)
    if hard:
        if timeout is None:
            verdicts = [math_verify_equal(p, g) for p, g in hard]
        else:
            pool = shared_pool()
            # A worker takes 1-2 s to start, the time of ~20 math-verify checks: start more only for many pairs.
            workers = min(num_workers, max(pool.size, 1 + len(hard) // _PAIRS_PER_NEW_WORKER))
            verdicts = pool.run(hard, timeout=timeout, num_workers=workers)
        unique.update(zip(hard, verdicts))
    logger.debug("check_batch: %d pairs, %d unique, %d sent to math-verify", len(pairs), len(unique), len(hard))
    return [unique[pair] for pair in pairs]
