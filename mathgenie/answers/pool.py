"""A process pool for math-verify with a deadline per item.

math-verify's own timeout is ``signal.alarm``: it raises off the main thread and cannot interrupt sympy inside C
code. Here each worker is a fresh ``python`` process (started with `subprocess`, so it also works from daemonic
``multiprocessing`` workers and from threads) that answers one ``(pred, gold)`` at a time over a pipe. The parent
waits with `selectors` (no signals); a worker that misses its deadline is killed, the item counts as not equal, and a
new worker takes its place. Workers are reused across calls and exit when the parent closes their stdin or dies.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from mathgenie.execution import protocol  # length-prefixed JSON frames, as the sandbox speaks

logger = logging.getLogger(__name__)

_BOOT_CODE = "from mathgenie.answers.pool import _worker_main; _worker_main()"
_BOOT_TIMEOUT_S = 120.0  # a cold import of sympy on a busy machine; only a broken install takes this long
_WORKER_MEMORY_MB = 3072
_job_ids = itertools.count()


def default_num_workers() -> int:
    """The CPUs this process may use, at most 8: after the fast paths only a few percent of pairs need a worker."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


# ---------------------------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------------------------


def _worker_main() -> None:
    import resource
    import signal

    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol stream
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    limit = _WORKER_MEMORY_MB * 2**20
    try:  # a runaway sympy computation becomes a MemoryError instead of swapping the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    parent = os.getppid()

    def watch_parent() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()

    from mathgenie.answers.compare import math_verify_equal

    math_verify_equal("(1,2]", "\\frac{x^2}{2}")  # sympy's first call is slow: pay it before saying ready
    try:
        protocol.write_frame(out_fd, {"ready": os.getpid()})
        while True:
            message = protocol.read_frame(0)
            if message is None:
                return
            job, pred, gold = message["job"], message["pred"], message["gold"]
            try:
                check = resolve_check(message["check"]) if message.get("check") else math_verify_equal
                verdict = bool(check(pred, gold))
            except (Exception, RecursionError, MemoryError):
                logger.debug("math-verify failed on %r vs %r", pred[:80], gold[:80], exc_info=True)
                verdict = False
            protocol.write_frame(out_fd, {"job": job, "verdict": verdict})
    except BrokenPipeError:  # the parent went away or closed the pool while we started
        return


_checks: dict = {}


def resolve_check(name: str):
    """``"module:function"`` → the function (another scorer than math-verify, e.g. MathCoder's), imported once."""
    if name not in _checks:
        import importlib

        module, _, function = name.partition(":")
        _checks[name] = getattr(importlib.import_module(module), function)
    return _checks[name]


# ---------------------------------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # so workers import this mathgenie, installed or not
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.rfd, self.wfd = self.proc.stdout.fileno(), self.proc.stdin.fileno()
        self.started = time.monotonic()
        self.buf = protocol.FrameBuffer()
        self.ready = False
        self.job: int | None = None
        self.deadline: float | None = None

    def send(self, job: int, pred: str, gold: str, check: str | None = None) -> None:
        protocol.write_frame(self.wfd, {"job": job, "pred": pred, "gold": gold, **({"check": check} if check else {})})

    def receive(self) -> list[dict] | None:
        """Frames that have arrived, or None when the worker has exited."""
        data = os.read(self.rfd, 1 << 16)
        return self.buf.feed(data) if data else None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self, grace_s: float = 1.0) -> None:
        self.request_exit()
        self.finish(time.monotonic() + grace_s)

    def request_exit(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker returns from its loop
        except OSError:
            pass

    def finish(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def forget(self) -> None:
        """In a forked child: drop our copies of the pipes to the parent's worker without touching it."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                os.close(f.fileno())
            except OSError:
                pass


class CheckerPool:
    """Worker processes running `compare.math_verify_equal`, one item at a time each, with per-item deadlines.

    Thread-safe: concurrent `run` calls take turns. Use `check_batch`, which shares one pool per process; make your
    own only to control its lifetime (``with CheckerPool() as pool: pool.run(items, timeout=5.0)``).
    """

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0  # items that missed their deadline, since the pool was made
        self.crashes = 0  # items whose worker died under them

    def __enter__(self) -> CheckerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        return len(self._workers)

    def start(self, num_workers: int) -> None:
        """Start workers up to ``num_workers`` without waiting for them (they import sympy meanwhile)."""
        if self._lock.acquire(blocking=False):
            try:
                while len(self._workers) < num_workers:
                    self._workers.append(_Worker())
            finally:
                self._lock.release()

    def run(self, items: list[tuple], *, timeout: float | None, num_workers: int) -> list[bool]:
        """math-verify verdicts for ``(pred, gold)`` items, or the verdicts of another check for ``(pred, gold,
        "module:function")`` items; an item past ``timeout`` seconds (or whose worker crashed) is False."""
        if not items:
            return []
        with self._lock:
            return self._run(items, timeout, max(1, num_workers))

    def _run(self, items, timeout, num_workers) -> list[bool]:
        while len(self._workers) < min(num_workers, len(items)):
            self._workers.append(_Worker())
        run = _Run(self, items, timeout, self._workers[:min(num_workers, len(items))])
        try:
            while run.todo or run.in_flight:
                run.dispatch()
                for key, _ in run.selector.select(run.wait()):
                    run.receive(key.data)
                run.expire()
        except BaseException:
            for w in list(run.active):  # a busy worker would answer into the next run: stop it
                if w.job is not None or not w.ready:
                    self._workers.remove(w)
                    w.kill()
            raise
        finally:
            run.selector.close()
        return run.results

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                w.request_exit()
            deadline = time.monotonic() + 1.0
            for w in self._workers:
                w.finish(deadline)
            self._workers.clear()

    def _forget(self) -> None:
        for w in self._workers:
            w.forget()
        self._workers.clear()
        self._lock = threading.Lock()


class _Run:
    """One `CheckerPool.run`: hands items to idle workers, reads their verdicts, replaces dead or late ones."""

    def __init__(self, pool: CheckerPool, items: list[tuple], timeout: float | None, active: list[_Worker]):
        self.pool, self.items, self.timeout, self.active = pool, items, timeout, active
        self.results = [False] * len(items)
        self.todo = deque(range(len(items)))
        self.in_flight: dict[int, int] = {}  # job id -> item index; replies to other ids (an aborted run) are dropped
        self.boot_failures = 0
        self.selector = selectors.DefaultSelector()
        for w in active:
            self.selector.register(w.rfd, selectors.EVENT_READ, w)

    def replace(self, w: _Worker) -> None:
        if w.job is not None:
            self.in_flight.pop(w.job, None)
        self.selector.unregister(w.rfd)
        w.kill()
        new = _Worker()
        self.pool._workers[self.pool._workers.index(w)] = new
        self.active[self.active.index(w)] = new
        self.selector.register(new.rfd, selectors.EVENT_READ, new)

    def dispatch(self) -> None:
        now = time.monotonic()
        for w in list(self.active):
            if w.ready and w.job is None and self.todo:
                index = self.todo.popleft()
                w.job, w.deadline = next(_job_ids), (now + self.timeout if self.timeout is not None else None)
                self.in_flight[w.job] = index
                try:
                    w.send(w.job, *self.items[index])
                except OSError:  # it died while idle: the item never started, so it goes back in line
                    self.todo.appendleft(index)
                    self.pool.crashes += 1
                    self.replace(w)

    def wait(self) -> float | None:
        waits = [w.deadline for w in self.active if w.job is not None and w.deadline is not None]
        waits += [w.started + _BOOT_TIMEOUT_S for w in self.active if not w.ready]
        return max(0.0, min(waits) - time.monotonic()) if waits else None

    def receive(self, w: _Worker) -> None:
        frames = w.receive()
        if frames is None:  # the worker exited
            if not w.ready:
                self.boot_failures += 1
                if self.boot_failures >= 3:
                    raise RuntimeError(
                        f"the answer-checker worker exited during start-up (exit code {w.proc.wait()}); its stderr "
                        f"is above. Check that `{sys.executable} -c 'import math_verify, mathgenie.answers'` works.")
            elif w.job is not None:
                self.pool.crashes += 1
                logger.warning("answer-checker worker died on %r vs %r; counted as not equal",
                               *(x[:80] for x in self.items[self.in_flight[w.job]][:2]))
            self.replace(w)
            return
        for frame in frames:
            if "ready" in frame:
                w.ready = True
            elif frame.get("job") == w.job:
                self.results[self.in_flight.pop(w.job)] = bool(frame["verdict"])
                w.job = w.deadline = None

    def expire(self) -> None:
        now = time.monotonic()
        for w in list(self.active):
            if w.job is not None and w.deadline is not None and now >= w.deadline:
                self.pool.timeouts += 1
                logger.warning("answer check timed out after %.1fs on %r vs %r; counted as not equal",
                               self.timeout, *(x[:80] for x in self.items[self.in_flight[w.job]][:2]))
                self.replace(w)
            elif not w.ready and now >= w.started + _BOOT_TIMEOUT_S:
                raise RuntimeError(f"the answer-checker worker did not start within {_BOOT_TIMEOUT_S:.0f}s")


_shared: CheckerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> CheckerPool:
    """The process-wide pool used by `is_equivalent` and `check_batch`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CheckerPool()
        return _shared


def shutdown() -> None:
    """Stop the shared pool's workers (they are restarted on the next call that needs them)."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()


def _after_fork_in_child() -> None:
    global _shared, _shared_lock
    _shared_lock = threading.Lock()
    if _shared is not None:
        _shared._forget()  # the workers belong to the parent
        _shared = None


atexit.register(shutdown)
os.register_at_fork(after_in_child=_after_fork_in_child)
