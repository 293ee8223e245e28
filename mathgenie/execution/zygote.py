"""The zygote: a warm worker process that forks one process per session and schedules their executions.

Started by ``launcher.py``; talks frames (:mod:`mathgenie.execution.protocol`) with the host over fds ``HOST_IN`` and
``HOST_OUT``. Layout, when isolated::

    launcher (host namespaces)            -- creates the user namespace; the host maps its ids (launcher.py)
      zygote  (pid 1 of a new pid, mount, net, ipc, uts, cgroup namespace; root view from filesystem.py)
        session process (pid 1 of its own pid namespace, own mount namespace with a private /tmp,
                         own user namespace for a per-session process limit, uid 65534 or no capabilities,
                         rlimits, seccomp) -- runs cell.serve()
"""

from __future__ import annotations

import fcntl
import os
import resource
import selectors
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

from mathgenie.execution import cell, filesystem, linux, protocol
from mathgenie.execution.reuse import ReuseTracker

HOST_IN, HOST_OUT = 10, 11  # the host pipes, moved off 0/1 so stray prints cannot corrupt the protocol
NOBODY = 65534


@dataclass(eq=False)
class Proc:
    pid: int
    request_fd: int
    result_fd: int
    output_fd: int
    buffer: protocol.FrameBuffer
    session: Session | None = None
    request_id: int = -1
    deadline: float = 0.0
    cpu: float = 0.0
    served: int = 0
    workdir: str = "/tmp"


@dataclass(eq=False)
class Session:
    sid: int
    queue: deque = field(default_factory=deque)
    proc: Proc | None = None
    busy: bool = False
    closing: bool = False
    tracker: ReuseTracker = field(default_factory=ReuseTracker)


class Zygote:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.isolated = config["isolated"]
        self.timeout = float(config["timeout"])
        self.sessions: dict[int, Session] = {}
        self.idle: list[Proc] = []
        self.by_fd: dict[int, Proc] = {}
        self.ready: deque[Session] = deque()
        self.running = 0
        self.selector = selectors.DefaultSelector()
        self.host_buffer = protocol.FrameBuffer()
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if self.isolated else -1
        self.uid = NOBODY if config.get("nobody_mapped") else os.getuid()
        self.gid = NOBODY if config.get("nobody_mapped") else os.getgid()
        self.workdir_base = None if self.isolated else tempfile.mkdtemp(prefix="mathgenie-sandbox-")

    # --- session processes -----------------------------------------------------------------------------------------
    def spawn(self) -> Proc:
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        output = os.memfd_create("mathgenie-output", 0)
        workdir = filesystem.session_dir(self.config["scratch"]) if self.isolated else \
            tempfile.mkdtemp(dir=self.workdir_base)
        try:
            if self.isolated:
                linux.unshare(linux.CLONE_NEWPID)  # the next child is pid 1 of a fresh pid namespace
            pid = os.fork()
        except OSError:
            for fd in (request_r, request_w, result_r, result_w, output):
                os.close(fd)
            if self.isolated:
                linux.setns(self.pidns_fd, linux.CLONE_NEWPID)
            raise
        if pid == 0:
            try:
                self._become_session(request_r, result_w, output, workdir)
            except BaseException as exc:  # noqa: BLE001 -- report any setup failure, never return to the loop
                os.write(2, f"mathgenie sandbox: session setup failed: {exc!r}\n".encode())
            os._exit(70)
        if self.isolated:  # back to our own namespace, so the next unshare makes a fresh one for the next child
            linux.setns(self.pidns_fd, linux.CLONE_NEWPID)
        os.close(request_r)
        os.close(result_w)
        os.set_blocking(result_r, False)
        frame_limit = max(1 << 16, 16 * self.config["max_output_chars"])
        return Proc(pid, request_w, result_r, output, protocol.FrameBuffer(frame_limit), workdir=workdir)

    def _become_session(self, request_r: int, result_w: int, output: int, workdir: str) -> None:
        config = self.config
        devnull = os.open("/dev/null", os.O_RDONLY)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (devnull, output, output, request_r, result_w)]
        for target, fd in enumerate(moved):
            os.dup2(fd, target)  # 0 stdin, 1+2 output file, 3 requests, 4 results; everything else is closed
        os.closerange(5, 1 << 20)
        os.setsid()  # own process group: kill(0, ...) must not reach the other sessions of this worker
        if self.isolated:
            linux.unshare(linux.CLONE_NEWNS)
            filesystem.mount_scratch(f"size={config['disk_mb']}m,mode=0700,uid={self.uid},gid={self.gid}",
                                     config["scratch"])
            os.mkdir(workdir, 0o700)
            os.chown(workdir, self.uid, self.gid)
            linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")  # under memory pressure the kernel kills sandboxed code first
            if self.uid == NOBODY:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                linux.prctl(linux.PR_SET_DUMPABLE, 1)  # else /proc/self/* turn root-owned and uid_map is unwritable
            # A user namespace of its own makes RLIMIT_NPROC count this session's processes only.
            linux.unshare(linux.CLONE_NEWUSER)
            for name, text in (("setgroups", "deny"), ("uid_map", f"{self.uid} {self.uid} 1"),
                               ("gid_map", f"{self.gid} {self.gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            linux.drop_all_capabilities()
            resource.setrlimit(resource.RLIMIT_NPROC, (config["max_processes"],) * 2)
        else:
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("1000")
            except OSError:
                pass
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        memory = config["memory_mb"] << 20
        for limit, value in ((resource.RLIMIT_AS, (memory, memory)), (resource.RLIMIT_CORE, (0, 0)),
                             (resource.RLIMIT_FSIZE, (config["max_file_mb"] << 20,) * 2),
                             (resource.RLIMIT_NOFILE, (256, 256)),
                             (resource.RLIMIT_CPU, (config["cpu_seconds"], config["cpu_seconds"]))):
            resource.setrlimit(limit, value)
        if config["seccomp"]:
            linux.install_seccomp_filter()
        os.environ.update(HOME=workdir, TMPDIR=workdir, MPLCONFIGDIR=workdir)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        scratch, keep = (filesystem.SCRATCH, filesystem.scratch_names(config["scratch"])) if self.isolated else \
            (None, frozenset())
        cell.serve(3, 4, cell.Cell(workdir, config["max_output_chars"], scratch, keep), self.timeout)

    def kill(self, proc: Proc) -> int:
        """SIGKILL the session's whole tree (its pid namespace, or its process group when unisolated)."""
        try:
            if self.isolated:
                os.kill(proc.pid, signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(proc.pid, 0)
        if proc.result_fd in self.by_fd:
            self.selector.unregister(proc.result_fd)
            del self.by_fd[proc.result_fd]
        for fd in (proc.request_fd, proc.result_fd, proc.output_fd):
            os.close(fd)
        if not self.isolated:
            shutil.rmtree(proc.workdir, ignore_errors=True)
        return status

    # --- scheduling ------------------------------------------------------------------------------------------------
    def schedule(self) -> None:
        while self.ready and self.running < self.config["max_running"]:
            self.start(self.ready.popleft())

    def start(self, session: Session) -> None:
        request_id, code = session.queue.popleft()
        fresh = session.proc is None
        if fresh:
            try:
                session.proc = self.idle.pop() if self.idle else self.spawn()
            except OSError as exc:  # out of processes, memory or file descriptors: fail this block, not the worker
                error = f"SandboxError: cannot start a session process: {exc}"
                self.reply(request_id, error + "\n", error, reset=True)
                if session.queue:
                    self.ready.append(session)
                return
            session.tracker = ReuseTracker()
        proc = session.proc
        proc.session, proc.request_id = session, request_id
        session.busy = True
        self.running += 1
        if self.config["reuse_processes"]:
            session.tracker.observe(code)
        self.by_fd[proc.result_fd] = proc
        self.selector.register(proc.result_fd, selectors.EVENT_READ)
        proc.deadline = time.monotonic() + self.timeout
        try:
            protocol.write_frame(proc.request_fd, {"code": code, "fresh": fresh})
        except OSError:
            self.end(proc, "")

    def finish(self, proc: Proc, message: dict) -> None:
        output, error = message.get("output"), message.get("error")
        if not isinstance(output, str) or not (error is None or isinstance(error, str)):
            self.end(proc, "the session process sent a malformed result")
            return
        proc.cpu = float(message.get("cpu") or 0.0)
        proc.buffer.data.clear()
        self.selector.unregister(proc.result_fd)
        del self.by_fd[proc.result_fd]
        self.reply(proc.request_id, output, error)
        self.done(proc.session)

    def end(self, proc: Proc, reason: str, *, timed_out: bool = False) -> None:
        """The session's process is gone (crash, exit, timeout, protocol abuse): report what it printed and why."""
        head, tail, omitted = cell.read_output(proc.output_fd, self.config["max_output_chars"])
        status = self.kill(proc)
        if timed_out:
            error = f"TimeoutError: execution timed out after {self.timeout:g} s"
        elif reason:
            error = f"SandboxError: {reason}"
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            why = {"SIGXCPU": " (CPU time limit)", "SIGSEGV": " (segmentation fault, e.g. C stack overflow)",
                   "SIGKILL": " (killed, e.g. out of memory)"}.get(name, "")
            error = f"ProcessExited: the Python process was killed by {name}{why}"
        else:
            error = f"ProcessExited: the code ended the Python process (exit status {os.WEXITSTATUS(status)})"
        note = f"{error}; the session was restarted and its variables are lost.\n"
        output = cell.clip(head, tail + note, omitted, self.config["max_output_chars"]) if omitted else \
            cell.clip((head if not head or head.endswith("\n") else head + "\n") + note,
                      limit=self.config["max_output_chars"])
        session = proc.session
        session.proc = None
        self.reply(proc.request_id, output, error, timed_out=timed_out, reset=True)
        self.done(session)

    def done(self, session: Session) -> None:
        session.busy = False
        self.running -= 1
        if session.queue:
            # Depth first: a session that holds a process finishes its queued blocks before new sessions start, so
            # a batch of many sessions needs few processes at once (and reuses them).
            self.ready.appendleft(session)
        elif session.closing:
            self.release(session)

    def release(self, session: Session) -> None:
        self.sessions.pop(session.sid, None)
        proc, session.proc = session.proc, None
        if proc is None:
            return
        proc.session = None
        proc.served += 1
        config = self.config
        if (config["reuse_processes"] and session.tracker.clean and proc.served < config["max_sessions_per_process"]
                and proc.cpu < config["cpu_seconds"] - 2 * self.timeout and len(self.idle) < config["max_idle"]):
            self.idle.append(proc)
        else:
            self.kill(proc)

    def reply(self, request_id: int, output: str, error: str | None, *, timed_out: bool = False,
              reset: bool = False) -> None:
        valid = lambda text: text.encode("utf-8", "replace").decode("utf-8")  # noqa: E731 -- no lone surrogates
        protocol.write_frame(HOST_OUT, {"id": request_id, "output": valid(output), "timed_out": timed_out,
                                        "error": None if error is None else valid(error), "reset": reset})

    # --- host requests ---------------------------------------------------------------------------------------------
    def handle(self, message: dict) -> None:
        op, sid = message.get("op"), message.get("session")
        if op == "run":
            session = self.sessions.get(sid) or self.sessions.setdefault(sid, Session(sid))
            session.queue.append((message["id"], message["code"]))
            if not session.busy and session not in self.ready:
                self.ready.append(session)
        elif op == "close" and sid in self.sessions:
            session = self.sessions[sid]
            session.closing = True
            if not session.busy and not session.queue:
                if session in self.ready:
                    self.ready.remove(session)
                self.release(session)
        elif op == "shutdown":
            self.shutdown()

    def shutdown(self) -> None:
        procs = {id(p): p for p in [*self.by_fd.values(), *self.idle, *(s.proc for s in self.sessions.values())] if p}
        for proc in procs.values():
            try:
                self.kill(proc)
            except (ChildProcessError, OSError):
                pass
        if self.workdir_base:
            shutil.rmtree(self.workdir_base, ignore_errors=True)
        os._exit(0)

    def serve(self) -> None:
        self.selector.register(HOST_IN, selectors.EVENT_READ)
        while True:
            deadlines = [p.deadline for p in self.by_fd.values()]
            wait = max(min(deadlines) - time.monotonic(), 0) if deadlines else None
            for key, _ in self.selector.select(wait):
                if key.fd == HOST_IN:
                    chunk = os.read(HOST_IN, 1 << 20)
                    if not chunk:
                        self.shutdown()
                    for message in self.host_buffer.feed(chunk):
                        self.handle(message)
                    continue
                proc = self.by_fd.get(key.fd)
                if proc is None:
                    continue
                try:
                    chunk = os.read(key.fd, 1 << 16)
                    frames = proc.buffer.feed(chunk) if chunk else None
                except protocol.ProtocolError as exc:
                    self.end(proc, f"the session process broke the result protocol ({exc})")
                    continue
                except BlockingIOError:
                    continue
                if frames is None:
                    self.end(proc, "")
                elif frames:
                    self.finish(proc, frames[0])
            now = time.monotonic()
            for proc in [p for p in self.by_fd.values() if p.deadline <= now]:
                self.end(proc, "", timed_out=True)
            self.schedule()
