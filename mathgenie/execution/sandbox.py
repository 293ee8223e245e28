"""The host side of the sandbox: workers, session routing, futures.

Each worker is one zygote (``launcher.py``, ``zygote.py``) in its own namespaces with the math stack imported; it
forks a process per session and reports one result frame per execution (``worker.py`` holds the host's end).
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import threading
import weakref
from collections.abc import Hashable, Iterable
from concurrent.futures import Future

from mathgenie.execution import filesystem, linux
from mathgenie.execution.worker import ExecutionResult, SandboxError, SandboxUnavailableError, Worker

logger = logging.getLogger(__name__)

DEFAULT_PRELOAD = ("sympy", "numpy", "math", "fractions")
__all__ = ["DEFAULT_PRELOAD", "ExecutionResult", "Sandbox", "SandboxError", "SandboxUnavailableError"]


class Sandbox:
    """Runs model-written Python in isolated, stateful sessions (see the module docs and the README).

    Args:
        timeout: wall-clock seconds per execution; on expiry the session's whole process tree is killed and the
            session restarts empty.
        memory_mb: address-space limit of each process a session runs (RLIMIT_AS).
        max_output_chars: ``ExecutionResult.output`` is cut to this many characters (head and tail kept).
        num_workers: worker processes (zygotes); executions run on them in parallel. Default: one per CPU core.
        max_processes: processes and threads one session may have at once (RLIMIT_NPROC in its user namespace).
        max_file_mb: largest file (and output stream) a session may write (RLIMIT_FSIZE).
        disk_mb: size of a session's private, writable /tmp (its working directory).
        cpu_seconds: CPU seconds a session process may use over its life; each execution gets ``timeout`` more.
        reuse_processes: hand a session's process to the next session when every cell it ran passed the
            conservative check in ``reuse.py``; ``False`` forks a fresh process for every session.
        max_running_per_worker: executions a worker runs at once (others wait in its queue).
        preload: modules imported once in each worker and inherited by every session.
        readonly_paths: extra host paths made visible, read-only, at the same paths inside the sandbox.
        allow_unisolated: if namespaces or seccomp are unavailable, run anyway with only rlimits, a private
            directory and a scrubbed environment (logged loudly). Without it such a machine raises
            ``SandboxUnavailableError``.
    """

    def __init__(self, timeout: float = 10.0, memory_mb: int = 2048, max_output_chars: int = 2000,
                 num_workers: int | None = None, *, max_processes: int = 32, max_file_mb: int = 16,
                 disk_mb: int = 64, cpu_seconds: int = 600, reuse_processes: bool = True,
                 max_running_per_worker: int = 2, preload: Iterable[str] = DEFAULT_PRELOAD,
                 readonly_paths: Iterable[str] = (), allow_unisolated: bool = False,
                 start_timeout: float = 180.0) -> None:
        if timeout <= 0 or memory_mb < 256 or max_output_chars < 100:
            raise ValueError(f"Sandbox limits out of range: timeout={timeout} (> 0), memory_mb={memory_mb} "
                             f"(>= 256), max_output_chars={max_output_chars} (>= 100)")
        if platform.system() != "Linux":
            raise SandboxUnavailableError(f"the sandbox needs Linux (namespaces, rlimits); this is {platform.system()}")
        readonly_paths = [os.path.abspath(p) for p in readonly_paths]
        for path in readonly_paths:
            if not os.path.exists(path) or os.path.realpath(path) == "/tmp":
                raise ValueError(f"readonly_paths entry {path!r} must exist and not be /tmp itself (inside the "
                                 "sandbox /tmp is each session's private, writable directory)")
        seccomp = linux.seccomp_supported()
        if not seccomp:
            message = (f"no seccomp filter for CPU architecture {platform.machine()!r} (x86_64 and aarch64 are "
                       "supported)")
            if not allow_unisolated:
                raise SandboxUnavailableError(f"{message}; pass Sandbox(allow_unisolated=True) to run without it")
            logger.warning("%s: running WITHOUT it (allow_unisolated=True); sandboxed code may call any syscall "
                           "its namespaces allow", message)
        config = {
            "timeout": float(timeout), "memory_mb": int(memory_mb), "max_output_chars": int(max_output_chars),
            "max_processes": int(max_processes), "max_file_mb": int(max_file_mb), "disk_mb": int(disk_mb),
            "cpu_seconds": int(max(cpu_seconds, 4 * timeout)), "reuse_processes": bool(reuse_processes),
            "max_running": int(max_running_per_worker), "max_sessions_per_process": 200, "max_idle": 64,
            "preload": list(preload), "readonly_paths": readonly_paths,
            "secret_paths": filesystem.secret_paths(os.environ.get("HOME")), "seccomp": seccomp,
            "isolated": True, "nobody_mapped": os.geteuid() == 0,
        }
        self.timeout = float(timeout)
        self.isolated = True
        count = num_workers or os.cpu_count() or 1
        try:
            self._workers = self._start_workers(config, count, start_timeout)
        except SandboxUnavailableError as exc:
            if not allow_unisolated:
                raise SandboxUnavailableError(
                    f"sandbox isolation is unavailable on this machine: {exc}. The sandbox needs Linux user, mount, "
                    "pid and network namespaces: enable unprivileged user namespaces (sysctl "
                    "user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 on Debian; "
                    "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu >= 23.10), or pass "
                    "Sandbox(allow_unisolated=True) to run model code WITHOUT network, filesystem or secret "
                    "isolation.") from None
            logger.warning("SANDBOX NOT ISOLATED (%s): model code can read and write every file this user can "
                           "(Hugging Face tokens included) and signal this user's processes; only rlimits, the "
                           "seccomp filter (if any), a private directory and a scrubbed environment apply.", exc)
            self.isolated = False
            self._workers = self._start_workers(dict(config, isolated=False), count, start_timeout)
        self._lock = threading.Lock()
        self._sessions: dict[Hashable, tuple[Worker, int, int]] = {}
        self._session_ids = itertools.count()
        self._closed = False
        self._finalizer = weakref.finalize(self, Sandbox._shutdown, self._workers)

    @staticmethod
    def _start_workers(config: dict, count: int, start_timeout: float) -> list[Worker]:
        workers = [Worker(i, config, start_timeout) for i in range(count)]
        errors: list[BaseException] = []

        def start(worker: Worker) -> None:
            try:
                worker.start()
            except BaseException as exc:  # noqa: BLE001 -- re-raised below, after every worker is accounted for
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            Sandbox._shutdown(workers)
            raise errors[0]
        return workers

    @staticmethod
    def _shutdown(workers: list[Worker]) -> None:
        for worker in workers:
            worker.close()

    def _route(self, session: Hashable) -> tuple[Worker, int]:
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            entry = self._sessions.get(session)
            if entry is not None and entry[0].generation == entry[2]:
                return entry[0], entry[1]
            usable = [w for w in self._workers if not w.closing] or self._workers  # else its failure is raised
            worker = min(usable, key=lambda w: w.live_sessions)
            worker.live_sessions += 1
            sid = next(self._session_ids)
            self._sessions[session] = (worker, sid, worker.generation)
            return worker, sid

    def submit(self, code: str, session: Hashable = "default") -> Future:
        """Queue ``code`` for ``session`` and return a ``Future[ExecutionResult]`` at once. Blocks of one session
        run in submission order; different sessions run in parallel across workers."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}: {code!r:.80}")
        hash(session)
        future: Future = Future()
        worker, sid = self._route(session)
        worker.send({"op": "run", "session": sid, "code": code}, future)
        return future

    def run(self, code: str, session: Hashable = "default") -> ExecutionResult:
        """Run one block in ``session`` (created on first use) and wait for its result."""
        return self.submit(code, session).result()

    def run_batch(self, items: Iterable[tuple[Hashable, str]], *, close_sessions: bool = False
                  ) -> list[ExecutionResult]:
        """Run ``(session, code)`` pairs concurrently (pairs of one session in order) and return their results in
        input order. ``close_sessions=True`` closes each session after its last pair, so its process can be reused
        while the batch is still running."""
        items = list(items)
        last = {session: i for i, (session, _) in enumerate(items)}
        futures = []
        for i, (session, code) in enumerate(items):
            futures.append(self.submit(code, session))
            if close_sessions and last[session] == i:
                self.close_session(session)
        return [future.result() for future in futures]

    def close_session(self, session: Hashable) -> None:
        """Forget ``session`` (after its queued blocks ran). Unknown sessions are ignored."""
        with self._lock:
            entry = self._sessions.pop(session, None)
            if entry is None:
                return
            worker, sid, generation = entry
            if worker.generation != generation:
                return
            worker.live_sessions -= 1
        worker.send({"op": "close", "session": sid})

    def close(self) -> None:
        """Stop every worker and session process. Pending futures fail with ``SandboxError``."""
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
