"""One worker as the host sees it: the launcher process, its pipes, and the futures waiting on its results.

The host never unpickles anything a worker sends: frames are JSON (``protocol.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from mathgenie.execution import protocol

logger = logging.getLogger(__name__)

_HUNG_GRACE_S = 30.0


@dataclass(frozen=True)
class ExecutionResult:
    """What one code block produced.

    ``output`` is what the model sees (stdout/stderr, the last expression's value, the traceback tail; truncated
    to ``max_output_chars`` keeping head and tail; ``""`` when nothing was printed). ``error`` is the exception line
    (``"NameError: name 'x' is not defined"``) or ``None``. ``session_reset`` is true when the session's process
    ended (timeout, crash, ``os._exit``): the next block of that session starts with empty variables.
    """

    output: str
    error: str | None = None
    timed_out: bool = False
    session_reset: bool = False


class SandboxUnavailableError(RuntimeError):
    """The isolation the sandbox relies on cannot be set up on this machine."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (closed, or a worker could not start)."""


def _clean_env(package_parent: str | None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONHASHSEED": "0",
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1"}
    env.update({f"{lib}_NUM_THREADS": "1" for lib in ("OMP", "OPENBLAS", "MKL", "NUMEXPR", "VECLIB_MAXIMUM")})
    if package_parent:
        env["PYTHONPATH"] = package_parent
    return env


def _map_ids(pid: int) -> None:
    """Write the worker's user-namespace id maps from the host side. As root, uid/gid 65534 is mapped too, so
    sessions can drop to ``nobody``; otherwise only the caller's own id can be mapped."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        uid_map, gid_map = "0 0 1\n65534 65534 1\n", "0 0 1\n65534 65534 1\n"
    else:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
        uid_map, gid_map = f"0 {uid} 1\n", f"0 {gid} 1\n"
    for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)


class Worker:
    """One zygote process, its pipes, and the futures waiting on it."""

    def __init__(self, index: int, config: dict, start_timeout: float) -> None:
        self.index = index
        self.config = config
        self.start_timeout = start_timeout
        self.lock = threading.Lock()
        self.pending: dict[int, Future] = {}
        self.ids = itertools.count()
        self.live_sessions = 0
        self.generation = 0
        self.closing = False
        self.failure: str | None = None
        self.last_progress = time.monotonic()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()
        self.reader: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        import mathgenie

        package_dir = os.path.dirname(os.path.abspath(mathgenie.__file__))
        parent = os.path.dirname(package_dir)
        injected = None if os.path.basename(parent) in ("site-packages", "dist-packages") else parent
        config = dict(self.config, injected_path=injected)
        self.log.seek(0)
        self.log.truncate()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mathgenie.execution.launcher", json.dumps(config)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, env=_clean_env(injected), cwd="/", start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        message = self._handshake_frame(deadline)
        if message.get("event") == "map_ids":
            try:
                _map_ids(self.proc.pid)
            except OSError as exc:
                self.kill()
                raise SandboxUnavailableError(f"cannot map user ids into the worker's user namespace: {exc}") from None
            protocol.write_frame(self.proc.stdin.fileno(), {"event": "ids_mapped"})
            message = self._handshake_frame(deadline)
        if message.get("event") == "fatal":
            self.kill()
            if message.get("stage") == "isolation":
                raise SandboxUnavailableError(message.get("error", "unknown error"))
            raise SandboxError(f"worker {self.index} failed to start: {message.get('error')}; its log:\n"
                               f"{self.log_tail()}")
        if message.get("event") != "ready":
            self.kill()
            raise SandboxError(f"worker {self.index} sent {message!r} instead of 'ready'")
        self.generation += 1
        self.last_progress = time.monotonic()
        self.reader = threading.Thread(target=self._read_loop, args=(self.proc,), daemon=True,
                                       name=f"mathgenie-sandbox-{self.index}")
        self.reader.start()

    def _handshake_frame(self, deadline: float) -> dict:
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            self.kill()
            raise SandboxError(f"worker {self.index} did not start within {self.start_timeout:g} s; "
                               f"its log:\n{self.log_tail()}")
        message = protocol.read_frame(fd)
        if message is None:
            self.proc.wait()
            raise SandboxError(f"worker {self.index} exited during start-up (status {self.proc.returncode}); "
                               f"its log:\n{self.log_tail()}")
        return message

    def log_tail(self, size: int = 4000) -> str:
        self.log.flush()
        end = self.log.seek(0, os.SEEK_END)
        self.log.seek(max(end - size, 0))
        return self.log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            proc = self.proc
            if proc is not None and proc.poll() is None:
                try:
                    protocol.write_frame(proc.stdin.fileno(), {"op": "shutdown"})
                except OSError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
            for stream in (proc.stdin, proc.stdout):
                stream.close()
        if self.reader is not None and self.reader is not threading.current_thread():
            self.reader.join(timeout=5)
        self._fail_pending("the sandbox was closed before this execution finished")
        self.log.close()

    # --- requests --------------------------------------------------------------------------------------------------
    def send(self, message: dict, future: Future | None = None) -> None:
        with self.lock:
            if self.closing:
                raise SandboxError(self.failure or "the sandbox is closed")
            if not self.pending:
                self.last_progress = time.monotonic()  # the hung-worker clock starts when work is outstanding
            if future is not None:
                message["id"] = request_id = next(self.ids)
                self.pending[request_id] = future
            try:
                protocol.write_frame(self.proc.stdin.fileno(), message)
            except (OSError, ValueError):
                pass  # the worker died; the reader fails the pending futures and restarts it

    def _fail_pending(self, reason: str) -> None:
        with self.lock:
            pending, self.pending = self.pending, {}
        for future in pending.values():
            future.set_exception(SandboxError(reason))

    def _read_loop(self, proc: subprocess.Popen) -> None:
        fd = proc.stdout.fileno()
        buffer = protocol.FrameBuffer()
        hung_after = self.config["timeout"] + _HUNG_GRACE_S
        while True:
            try:
                readable = select.select([fd], [], [], 1.0)[0]
                if not readable:
                    if self.pending and time.monotonic() - self.last_progress > hung_after:
                        logger.error("sandbox worker %d made no progress for %.0f s; restarting it", self.index,
                                     hung_after)
                        self.kill()
                    continue
                chunk = os.read(fd, 1 << 20)
                messages = buffer.feed(chunk) if chunk else None
            except (OSError, ValueError, protocol.ProtocolError):
                messages = None
            if messages is None:
                break
            self.last_progress = time.monotonic()
            for message in messages:
                with self.lock:
                    future = self.pending.pop(message.get("id"), None)
                if future is not None:
                    future.set_result(ExecutionResult(output=message["output"], error=message["error"],
                                                      timed_out=message["timed_out"], session_reset=message["reset"]))
        # Restart under the lock, so nothing is sent to the dead process or registered after the failure below.
        with self.lock:
            if self.closing:
                return
            self.kill()
            logger.warning("sandbox worker %d died (status %s); restarting it. Log tail:\n%s", self.index,
                           proc.returncode, self.log_tail())
            lost, self.pending = self.pending, {}
            self.live_sessions = 0
            try:
                self.start()
            except (SandboxError, SandboxUnavailableError) as exc:
                logger.error("sandbox worker %d could not be restarted: %s", self.index, exc)
                self.failure = f"sandbox worker {self.index} died and could not be restarted: {exc}"
                self.closing = True
        reason = f"the sandbox worker died (status {proc.returncode}) and was restarted"
        for future in lost.values():
            future.set_result(ExecutionResult(output=f"SandboxError: {reason}\n", error=f"SandboxError: {reason}",
                                              session_reset=True))
