"""What runs inside a session process: notebook-cell execution and output formatting.

A cell behaves like a Jupyter cell (the MathCoder harness runs a Jupyter kernel): stdout and stderr in the order they
were written, then the ``repr`` of the last expression's value (unless it is ``None`` or the cell ends with ``;``),
then the traceback of an uncaught exception, trimmed to the user's own frames. Long output keeps its head and tail.
"""

from __future__ import annotations

import ast
import builtins
import io
import linecache
import math
import os
import resource
import shutil
import sys
import tokenize
import traceback

from mathgenie.execution import protocol

OUTPUT_FD = 1
_THIS_FILE = __file__.removesuffix("c")
_HEAD_SHARE = 0.4  # of the output budget kept from the start; the rest (tracebacks, final values) from the end


def clip(head: str, tail: str = "", omitted: int = 0, limit: int = 2000) -> str:
    """Fit ``head + <omitted characters> + tail`` into ``limit`` characters, keeping the start and the end and
    saying how much was cut. ``omitted`` counts text already dropped between ``head`` and ``tail``."""
    if not omitted and len(head) + len(tail) <= limit:
        return head + tail
    if not omitted:
        head, tail = head + tail, ""
    total = len(head) + omitted + len(tail)
    # The marker's count is at most ``total``, so this reserves enough room for it.
    budget = max(limit - len(f"\n... [{total} characters truncated] ...\n"), 0)
    if tail:  # already cut in the middle: the end comes from ``tail``, and one side may use the other's spare room
        keep_tail = min(len(tail), budget - min(int(budget * _HEAD_SHARE), len(head)))
        keep_head = min(len(head), budget - keep_tail)
        end = tail
    else:
        keep_head = int(budget * _HEAD_SHARE)
        keep_tail = budget - keep_head
        end = head
    marker = f"\n... [{total - keep_head - keep_tail} characters truncated] ...\n"
    return head[:keep_head] + marker + (end[len(end) - keep_tail:] if keep_tail else "")


def read_output(fd: int, limit: int) -> tuple[str, str, int]:
    """Read what was written to the output file as (head, tail, omitted characters), reading at most a few
    ``limit``-sized chunks however large the file grew."""
    size = os.fstat(fd).st_size
    chunk = 4 * limit + 16  # UTF-8 is at most 4 bytes a character
    if size <= 2 * chunk:
        return os.pread(fd, size, 0).decode("utf-8", "replace"), "", 0
    head = os.pread(fd, chunk, 0).decode("utf-8", "replace")
    tail = os.pread(fd, chunk, size - chunk).decode("utf-8", "replace")
    return head, tail, max(size - 2 * chunk, 1)


def _short_path(filename: str) -> str:
    """Library frames keep their path inside ``sys.path`` (``sympy/core/numbers.py``), not the host's layout."""
    for root in sorted((p for p in sys.path if p), key=len, reverse=True):
        if filename.startswith(root.rstrip("/") + "/"):
            return filename[len(root.rstrip("/")) + 1:]
    return filename


def _trim(te: traceback.TracebackException | None, seen: set[int] | None = None) -> None:
    """Drop the sandbox's own frames and shorten library paths, in the exception and its causes."""
    seen = set() if seen is None else seen
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    frames = [f for f in te.stack if f.filename != _THIS_FILE]
    for frame in frames:
        frame.filename = _short_path(frame.filename)
    te.stack = traceback.StackSummary.from_list(frames)
    if isinstance(getattr(te, "filename", None), str):  # SyntaxError
        te.filename = _short_path(te.filename)
    _trim(te.__cause__, seen)
    _trim(te.__context__, seen)


def format_exception(exc: BaseException) -> tuple[str, str]:
    """(traceback text, last line) for an exception raised by user code."""
    te = traceback.TracebackException.from_exception(exc)
    _trim(te)
    text = "".join(te.format())
    last = "".join(te.format_exception_only()).strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return text, last


def _ends_with_semicolon(code: str) -> bool:
    """``x;`` hides the value, as in Jupyter (tokenized, so a ``;`` inside a string or comment does not count)."""
    if ";" not in code.rstrip().rsplit("\n", 1)[-1]:
        return False
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
                                    tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    return bool(tokens) and tokens[-1].string == ";"


class Cell:
    """One session's state inside its process: the namespace, the cell counter, the private directory."""

    def __init__(self, workdir: str, max_output_chars: int, scratch: str | None = None,
                 keep: frozenset[str] = frozenset()) -> None:
        """``scratch``: the private directory the session may write (default ``workdir``; isolated, the whole /tmp
        that holds ``workdir``), wiped on `reset` except the entries named in ``keep`` (host paths laid into it)."""
        self.workdir = workdir
        self.scratch, self.keep = scratch or workdir, keep
        self.max_output_chars = max_output_chars
        self.pid = os.getpid()
        self.stream: io.TextIOWrapper | None = None
        self.namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
        self.count = 0
        os.chdir(workdir)

    def reset(self) -> None:
        """Forget the previous session (used when a clean process is handed to a new session)."""
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        for name in [k for k in linecache.cache if k.startswith("<cell-")]:
            del linecache.cache[name]
        self.count = 0
        with os.scandir(self.scratch) as entries:
            for entry in entries:
                if entry.name in self.keep:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        os.chdir(self.workdir)

    def _install_streams(self) -> None:
        os.dup2(OUTPUT_FD, 2)
        stream = self.stream
        if stream is None or stream.closed or sys.stdout is not stream or sys.stderr is not stream:
            # One buffer for both streams keeps prints and warnings in order; line buffering keeps what a
            # killed (timed-out) cell printed.
            stream = self.stream = io.TextIOWrapper(io.FileIO(OUTPUT_FD, "w", closefd=False), encoding="utf-8",
                                                    errors="backslashreplace", line_buffering=True)
            sys.stdout = sys.stderr = stream

    def _execute(self, code: str, filename: str) -> tuple[str | None, str | None, str | None]:
        """(repr of the last expression's value, traceback, error line)."""
        try:
            tree = ast.parse(code, filename, "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:  # it never ran: no stack to show
            return None, *format_exception(exc.with_traceback(None))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not _ends_with_semicolon(code):
            last = ast.Expression(tree.body.pop().value)
        try:
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is None:
                return None, None, None
            value = eval(compile(last, filename, "eval"), self.namespace)
            if value is None:
                return None, None, None
            self.namespace["_"] = value
            return repr(value), None, None
        except BaseException as exc:  # noqa: BLE001 -- SystemExit and KeyboardInterrupt are the cell's errors too
            if os.getpid() != self.pid:
                os._exit(0)  # a process the code forked came back here; it must not answer for the session
            return None, *format_exception(exc)

    def run(self, code: str) -> dict:
        self.count += 1
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        self._install_streams()
        display, tb, error = self._execute(code, filename)
        if os.getpid() != self.pid:
            os._exit(0)
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # output file full (RLIMIT_FSIZE) or the stream was closed by the code
            pass
        head, tail, omitted = read_output(OUTPUT_FD, self.max_output_chars)
        extra = (display + "\n" if display is not None else "") + (tb or "")
        if omitted:
            output = clip(head, tail + extra, omitted, self.max_output_chars)
        else:
            output = clip(head + extra, limit=self.max_output_chars)
        os.ftruncate(OUTPUT_FD, 0)
        os.lseek(OUTPUT_FD, 0, os.SEEK_SET)
        return {"output": output, "error": error}


def serve(request_fd: int, result_fd: int, cell: Cell, timeout: float) -> None:
    """The session process's loop: one request frame in, one result frame out, until the zygote closes the pipe."""
    fresh = True
    while True:
        message = protocol.read_frame(request_fd)
        if message is None:
            os._exit(0)
        if message.get("fresh") and not fresh:
            cell.reset()
        fresh = False
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(used + timeout) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        result = cell.run(message["code"])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu"] = usage.ru_utime + usage.ru_stime
        protocol.write_frame(result_fd, result)
