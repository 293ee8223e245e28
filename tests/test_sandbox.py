"""The sandbox against real attacks: each test asserts containment and that the same Sandbox keeps working after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from mathgenie.execution import ExecutionResult, Sandbox, SandboxError

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(timeout=TIMEOUT, memory_mb=512, num_workers=2, max_processes=16) as sb:
        yield sb


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def sandbox_processes(sb: Sandbox) -> int:
    return sum(len(descendants(w.proc.pid)) for w in sb._workers)


def assert_healthy(sb: Sandbox) -> None:
    """The sandbox still runs code, keeps state and isolates sessions after whatever the previous test did."""
    key = ("health", time.monotonic_ns())
    assert sb.run("from sympy import *\nx = symbols('x')\nr = solve(x**2 - 4, x)", key).error is None
    assert sb.run("r", key).output == "[-2, 2]\n"
    sb.close_session(key)


# --- notebook semantics --------------------------------------------------------------------------------------------
def test_output_is_stdout_then_last_expression_value(sandbox):
    result = sandbox.run("print('a')\nimport sys\nprint('b', file=sys.stderr)\n6 * 7", "cell")
    assert result == ExecutionResult(output="a\nb\n42\n", error=None, timed_out=False, session_reset=False)
    assert sandbox.run("6 * 7;", "cell").output == ""
    assert sandbox.run("None", "cell").output == ""
    assert sandbox.run("x = 1", "cell").output == ""
    assert sandbox.run("'a;b'", "cell").output == "'a;b'\n"
    sandbox.close_session("cell")


def test_state_persists_within_a_session_and_never_crosses_sessions(sandbox):
    sandbox.run("secret = 41", "alice")
    assert sandbox.run("secret + 1", "alice").output == "42\n"
    other = sandbox.run("secret", "bob")
    assert other.error == "NameError: name 'secret' is not defined"
    listing = sandbox.run("open('mine.txt', 'w').write('x'); import os; os.listdir('.')", "alice")
    assert listing.output == "['mine.txt']\n"
    assert sandbox.run("import os; os.listdir('.')", "bob").output == "[]\n"
    # Each session sees only its own processes (its own pid namespace).
    assert sandbox.run("import os; sorted(p for p in os.listdir('/proc') if p.isdigit())", "bob").output == "['1']\n"
    for session in ("alice", "bob"):
        sandbox.close_session(session)


def test_errors_show_the_traceback_tail_without_host_paths(sandbox):
    result = sandbox.run("from sympy import Matrix\ny = 1\nMatrix([[1, 2], [3, 4]]) * Matrix([[1, 2, 3]])", "err")
    assert result.error == "sympy.matrices.exceptions.ShapeError: Matrix size mismatch: (2, 2) * (1, 3)."
    assert result.output.startswith("Traceback (most recent call last):\n  File \"<cell-1>\", line 3, in <module>")
    assert "sympy/matrices/matrixbase.py" in result.output and result.output.endswith(result.error + "\n")
    for host_path in ("/work", sys.prefix, "mathgenie/execution"):
        assert host_path not in result.output
    syntax = sandbox.run("x = (1 +", "err")
    assert syntax.error.startswith("SyntaxError") and "Traceback" not in syntax.output
    assert sandbox.run("y", "err").output == "1\n"  # an error does not lose the session's state
    sandbox.close_session("err")


def test_long_output_keeps_head_and_tail_within_the_limit(sandbox):
    result = sandbox.run("for i in range(5000):\n    print(f'line {i}')\nraise ValueError('the end')", "long")
    assert len(result.output) <= 2000
    assert result.output.startswith("line 0\nline 1\n")
    assert "characters truncated" in result.output
    assert result.output.rstrip().endswith("ValueError: the end")
    sandbox.close_session("long")


def test_batch_and_futures_keep_order_per_session(sandbox):
    pairs = [(f"s{i % 3}", f"n = {i}" if i < 3 else "n = n * 10\nn") for i in range(9)]
    results = sandbox.run_batch(pairs, close_sessions=True)
    assert [r.output for r in results[3:]] == ["0\n", "10\n", "20\n", "0\n", "100\n", "200\n"]
    futures = [sandbox.submit(f"{i} ** 2", f"f{i}") for i in range(6)]
    assert [f.result(timeout=30).output for f in futures] == [f"{i * i}\n" for i in range(6)]
    for i in range(6):
        sandbox.close_session(f"f{i}")


# --- limits ---------------------------------------------------------------------------------------------------------
def test_infinite_loop_times_out_and_the_session_restarts_empty(sandbox):
    sandbox.run("kept = 1", "loop")
    started = time.monotonic()
    result = sandbox.run("print('before')\nwhile True:\n    pass", "loop")
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 5
    assert result.timed_out and result.session_reset
    assert result.error.startswith("TimeoutError")
    assert result.output.startswith("before\n") and "TimeoutError" in result.output
    assert sandbox.run("kept", "loop").error == "NameError: name 'kept' is not defined"
    sandbox.close_session("loop")
    assert_healthy(sandbox)


def test_timeout_kills_the_whole_process_tree(sandbox):
    before = sandbox_processes(sandbox)
    code = textwrap.dedent("""\
        import os, subprocess, time
        for _ in range(3):
            subprocess.Popen(['sleep', '600'], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            time.sleep(600)
        time.sleep(600)
    """)
    result = sandbox.run(code, "tree")
    assert result.timed_out
    assert sandbox_processes(sandbox) <= before + 1  # +1: the session's fresh process may already exist
    sandbox.close_session("tree")
    assert_healthy(sandbox)


def test_fork_bomb_is_capped_and_cleaned_up(sandbox):
    before = sandbox_processes(sandbox)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = sandbox.run(bomb, "bomb")
    assert result.timed_out
    assert sandbox_processes(sandbox) <= before + 1
    capped = sandbox.run("import os\npids = [os.fork() for _ in range(64)]", "bomb2")
    assert capped.error is not None and capped.error.startswith("BlockingIOError")
    for session in ("bomb", "bomb2"):
        sandbox.close_session(session)
    assert_healthy(sandbox)


def test_memory_bomb_raises_memory_error(sandbox):
    assert sandbox.run("x = bytearray(8 << 30)", "mem").error == "MemoryError"
    grow = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))", "mem")
    assert grow.error == "MemoryError"
    assert sandbox.run("len(chunks) < 10", "mem").output == "True\n"  # 512 MB limit, and the session survived
    sandbox.close_session("mem")
    assert_healthy(sandbox)


def test_output_flood_is_capped(sandbox):
    started = time.monotonic()
    result = sandbox.run("while True:\n    print('x' * 10000)", "flood")
    assert len(result.output) <= 2000
    assert result.error is not None  # the file-size limit stops the flood (or the timeout does)
    assert time.monotonic() - started < TIMEOUT + 5
    sandbox.close_session("flood")
    assert_healthy(sandbox)


def test_deep_recursion_is_contained(sandbox):
    result = sandbox.run("def f(n):\n    return f(n + 1)\nf(0)", "rec")
    assert result.error.startswith("RecursionError") and len(result.output) <= 2000
    deeper = sandbox.run("import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)", "rec")
    assert deeper.error is not None
    nested = sandbox.run("a = []\nfor _ in range(10**6):\n    a = [a]\nrepr(a)", "rec2")
    assert nested.error is not None
    for session in ("rec", "rec2"):
        sandbox.close_session(session)
    assert_healthy(sandbox)


# --- escapes ----------------------------------------------------------------------------------------------------------
def test_exits_and_signals_end_only_their_own_session(sandbox):
    sandbox.run("survivor = 'still here'", "bystander")
    exited = sandbox.run("import sys\nsys.exit(3)", "exit")
    assert exited.error == "SystemExit: 3" and not exited.session_reset  # like Jupyter: the kernel lives on
    hard = sandbox.run("v = 1\nimport os\nos._exit(7)", "exit")
    assert hard.session_reset and "exit status 7" in hard.error
    assert sandbox.run("v", "exit").error == "NameError: name 'v' is not defined"
    for code in ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",  # the parent is outside: pid 0
                 "import os, signal\nos.kill(0, signal.SIGKILL)",  # its process group only
                 "import os, signal\nos.kill(-1, signal.SIGKILL)",  # every process it can see: its own
                 "import os\nos.abort()",
                 "import ctypes\nctypes.string_at(0)"):
        result = sandbox.run(code, "killer")
        assert isinstance(result.output, str)
    assert sandbox.run("survivor", "bystander").output == "'still here'\n"
    for session in ("bystander", "exit", "killer"):
        sandbox.close_session(session)
    assert_healthy(sandbox)


def test_no_network_not_even_loopback(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        result = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "net")
        assert result.error is not None and result.error.startswith(("PermissionError", "OSError"))
        interfaces = sandbox.run("print(open('/proc/net/dev').read())", "net").output
        assert "lo:" in interfaces and "eth" not in interfaces and "ens" not in interfaces
        assert sandbox.run("import os\nos.path.exists('/sys/class/net')", "net").output == "False\n"
    finally:
        listener.close()
        sandbox.close_session("net")


def test_secrets_are_not_visible(sandbox, tmp_path):
    hf_home = Path(os.environ["HF_HOME"])
    hf_home.mkdir(parents=True, exist_ok=True)
    (hf_home / "token").write_text("hf_file_token_do_not_leak")
    code = textwrap.dedent(f"""\
        import os
        print(sorted(k for k in os.environ if 'TOKEN' in k or k.startswith('HF')))
        try:
            print(open({str(hf_home / 'token')!r}).read())
        except OSError as e:
            print(type(e).__name__)
        print(os.path.exists(os.path.expanduser('~/.cache/huggingface')), os.path.exists('/root/.cache'))
        print(open('/proc/self/environ').read().count('hf_'))
    """)
    result = sandbox.run(code, "thief")
    assert result.output == "[]\nFileNotFoundError\nFalse False\n0\n"
    sandbox.close_session("thief")


@pytest.fixture
def visible_dir():
    """A host directory under /tmp: the sandbox lays it, read-only, into each session's private /tmp."""
    path = Path(tempfile.mkdtemp(prefix="mathgenie-test-", dir="/tmp"))
    path.chmod(0o755)  # world-readable: as root, sessions run as nobody
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_secrets_stay_masked_inside_a_visible_directory(visible_dir, monkeypatch):
    tmp_path = visible_dir
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    (hf_home / "token").write_text("hf_file_token_do_not_leak")
    (hf_home / "token").chmod(0o644)  # readable by anyone on the host: only the mask can hide it
    (tmp_path / "data.txt").write_text("public")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    with Sandbox(timeout=TIMEOUT, num_workers=1, readonly_paths=[tmp_path]) as sb:
        assert sb.run(f"open({str(tmp_path / 'data.txt')!r}).read()").output == "'public'\n"
        leak = sb.run(f"import os\nos.listdir({str(hf_home)!r})")
        assert leak.output == "[]\n"
        write = sb.run(f"open({str(tmp_path / 'new.txt')!r}, 'w')")
        assert write.error.startswith("OSError: [Errno 30] Read-only file system")


def test_no_writes_or_deletes_outside_the_private_directory(sandbox):
    for path in ("/usr/lib/evil", sys.prefix + "/evil", "/etc/passwd", "/evil"):
        assert sandbox.run(f"open({path!r}, 'w')", "fs").error is not None
    assert sandbox.run("import os\nos.remove('/etc/passwd')", "fs").error is not None
    # a small read-only tree (the stdlib's json package): the walk stays well inside the timeout on a busy machine
    assert sandbox.run("import json, os, shutil\npackage = os.path.dirname(json.__file__)\n"
                       "shutil.rmtree(package, ignore_errors=True)\nsorted(os.listdir(package))[:2]", "fs"
                       ).output == "['__init__.py', '__pycache__']\n"
    assert Path("/etc/passwd").exists()
    privileges = sandbox.run("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                             "print(libc.unshare(0x10000000), libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n"
                             "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')])",
                             "fs")
    assert privileges.output == "-1 -1\n['0000000000000000']\n"
    sandbox.close_session("fs")


# --- wherever Python lives ----------------------------------------------------------------------------------------
PROBE_SCRIPT = """
import json, os, sys
from mathgenie.execution import Sandbox
with Sandbox(timeout=10, num_workers=1) as sb:
    report = {
        "prefix": sys.prefix,
        "imports": sb.run("import probe_pkg, sympy\\nprint(probe_pkg.VALUE, sympy.Integer(6) * 7)").output,
        "scratch": sb.run("open('/tmp/w.txt', 'w').write('ok')\\nprint(open('/tmp/w.txt').read())").output,
        "package_write": sb.run(f"open({os.path.dirname(sys.argv[1])!r} + '/evil.py', 'w')").error,
        "sibling": sb.run(f"import os\\nos.path.exists({sys.argv[1]!r})").output,
        "token": sb.run(f"import os\\nos.listdir({os.environ['HF_HOME']!r})").output,
        "cwd": sb.run("open('mine.txt', 'w').close()\\nsorted(os.listdir('.'))").output,
    }
    report["fresh_scratch"] = sb.run("import os\\nsorted(n for n in os.listdir('/tmp') if n.endswith('.txt'))", "next").output
print(json.dumps(report))
"""


def test_python_under_tmp_behind_a_symlink_chain_and_a_space(tmp_path):
    """A venv in a fresh /tmp directory whose name has a space, reached through two chained symlinks, with its own
    package and an HF token inside it: code imports the package, /tmp is the session's own, the rest stays hidden."""
    import site

    base = Path(tempfile.mkdtemp(prefix="mathgenie sandbox ", dir="/tmp"))
    try:
        venv = base / "real venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        (base / "link2").symlink_to(venv)
        (base / "link1").symlink_to(base / "link2")
        packages = next(venv.glob("lib/python3*/site-packages"))
        # the host's packages and this checkout, so the probe venv can import sympy and mathgenie
        (packages / "host.pth").write_text("\n".join([*site.getsitepackages(), str(Path(__file__).parents[1])]))
        (packages / "probe_pkg.py").write_text("VALUE = 'probe'\n")
        hf_home = venv / "hf"
        hf_home.mkdir()
        (hf_home / "token").write_text("hf_tmp_token_do_not_leak")
        sibling = base / "sibling.txt"
        sibling.write_text("host file next to the venv")
        for path in (base, venv):
            path.chmod(0o755)
        env = dict(os.environ, HF_HOME=str(hf_home))
        proc = subprocess.run([str(base / "link1" / "bin" / "python"), "-c", PROBE_SCRIPT, str(sibling)],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert report["prefix"] == str(base / "link1")  # the interpreter runs from the symlinked path
    assert report["imports"] == "probe 42\n"
    assert report["scratch"] == "ok\n"
    assert report["package_write"] is not None and "evil.py" in report["package_write"]
    assert report["sibling"] == "False\n"
    assert report["token"] == "[]\n"
    assert report["cwd"] == "['mine.txt']\n"  # the session's directory holds its own files, not the laid-in venv
    assert report["fresh_scratch"] == "[]\n"  # a new session gets a new /tmp, the venv laid back into it


# --- process reuse, recovery, fail-closed -----------------------------------------------------------------------------
def test_a_reused_process_leaks_nothing_to_the_next_session():
    with Sandbox(timeout=TIMEOUT, num_workers=1, max_running_per_worker=1) as sb:
        for i in range(3):  # pure sessions: their process is handed on, reset
            assert sb.run(f"import numpy as np\nnp.save('a{i}.npy', np.arange(3))\nimport os\nos.listdir('.')",
                          i).output == f"['a{i}.npy']\n"
            assert sb.run("prev", i).error == "NameError: name 'prev' is not defined"
            sb.run("prev = 1", i)
            sb.close_session(i)
        sb.run("import numpy as np\nnp.set_printoptions(precision=2)\nimport math\nmath.tau = 3", "dirty")
        sb.close_session("dirty")
        after = sb.run("import numpy as np, math\nprint(np.get_printoptions()['precision'], math.tau)", "next")
        assert after.output == "8 6.283185307179586\n"


def test_a_killed_worker_is_restarted(sandbox):
    sandbox.run("x = 1", "victim")
    for worker in sandbox._workers:
        os.killpg(worker.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = sandbox.run("1 + 1", ("after-kill", time.monotonic_ns()))
        if result.output == "2\n":
            break
        time.sleep(0.2)
    assert result.output == "2\n"
    assert sandbox.run("x", "victim").error is not None  # its state died with the worker
    sandbox.close_session("victim")
    assert_healthy(sandbox)


def test_a_hung_worker_is_replaced_but_an_idle_one_is_not(monkeypatch):
    from mathgenie.execution import worker as worker_module

    monkeypatch.setattr(worker_module, "_HUNG_GRACE_S", 0.5)  # "hung" = no answer for timeout + 0.5 s
    with Sandbox(timeout=1, num_workers=1) as sb:
        launcher = sb._workers[0].proc.pid
        assert sb.run("a = 1", "s").output == ""
        time.sleep(3)  # idle for longer than the hung threshold: not a hang
        assert sb.run("a", "s").output == "1\n" and sb._workers[0].proc.pid == launcher
        zygote = min(descendants(launcher))
        os.kill(zygote, signal.SIGSTOP)  # the worker stops answering
        hung = sb.run("a", "s")
        assert hung.error.startswith("SandboxError") and hung.session_reset
        assert sb._workers[0].proc.pid != launcher
        assert sb.run("2 + 2", "s").output == "4\n"


def test_clip_keeps_head_and_tail_within_the_limit():
    from mathgenie.execution.cell import clip

    text = "".join(f"line {i}\n" for i in range(1000))
    for limit in (100, 333, 2000):
        out = clip(text, limit=limit)
        assert len(out) <= limit and out.startswith("line 0\n") and out.endswith("line 999\n")
        head, rest = out.split("\n... [", 1)
        cut, tail = rest.split(" characters truncated] ...\n", 1)
        assert text.startswith(head) and text.endswith(tail) and len(head) + int(cut) + len(tail) == len(text)
    assert clip("short", limit=100) == "short"
    out = clip("head", "tail", omitted=10_000, limit=100)
    assert out == "head\n... [10000 characters truncated] ...\ntail"


def test_an_architecture_without_a_seccomp_table_fails_closed(monkeypatch):
    from mathgenie.execution import SandboxUnavailableError, linux

    monkeypatch.setattr(linux, "seccomp_supported", lambda: False)
    with pytest.raises(SandboxUnavailableError, match="allow_unisolated=True"):
        Sandbox(num_workers=1)


def test_a_broken_preload_is_a_startup_error_not_missing_isolation():
    with pytest.raises(SandboxError, match="no_such_module"):
        Sandbox(num_workers=1, preload=("sympy", "no_such_module"))


def test_without_namespaces_it_fails_closed_unless_explicitly_allowed():
    script = textwrap.dedent("""\
        import logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
        from mathgenie.execution import linux, Sandbox, SandboxUnavailableError
        linux.install_seccomp_filter()  # this process and its children can no longer create namespaces
        try:
            Sandbox(num_workers=1)
            print("OPENED")
        except SandboxUnavailableError as exc:
            print("CLOSED:", exc)
        with Sandbox(num_workers=1, timeout=5, allow_unisolated=True) as sb:
            print("ISOLATED" if sb.isolated else "UNISOLATED", sb.run("6 * 7").output.strip())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "OPENED" not in proc.stdout
    assert "CLOSED: sandbox isolation is unavailable" in proc.stdout and "allow_unisolated=True" in proc.stdout
    assert "SANDBOX NOT ISOLATED" in proc.stdout
    assert "UNISOLATED 42" in proc.stdout


def test_as_an_unprivileged_user_the_isolation_holds(tmp_path):
    """The non-root code path (one mapped id, capabilities dropped instead of switching to nobody), simulated with
    a user namespace in which this process is uid 1000."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and util-linux unshare to simulate an unprivileged user")
    token = tmp_path / "hf_home" / "token"
    token.parent.mkdir()
    token.write_text("hf_file_token_do_not_leak")
    script = textwrap.dedent(f"""\
        import os
        from mathgenie.execution import Sandbox
        assert os.geteuid() == 1000
        with Sandbox(num_workers=1, timeout=5) as sb:
            assert sb.isolated
            for code in ("print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')])",
                         "import socket\\nsocket.socket()", "open('/usr/evil', 'w')", "open({str(token)!r}).read()",
                         "from sympy import *\\nx = symbols('x')\\nsolve(x**2 - 1, x)"):
                print(sb.run(code).output.strip().splitlines()[-1])
    """)
    proc = subprocess.run(["unshare", "--user", "--map-user=1000", "--map-group=1000", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HOME=str(token.parent)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['0000000000000000']",
        "PermissionError: [Errno 1] Operation not permitted",
        "OSError: [Errno 30] Read-only file system: '/usr/evil'",
        f"FileNotFoundError: [Errno 2] No such file or directory: {str(token)!r}",
        "[-1, 1]",
    ]


def test_closed_sandbox_refuses_work():
    sb = Sandbox(timeout=TIMEOUT, num_workers=1)
    assert sb.run("1").output == "1\n"
    workers = [w.proc.pid for w in sb._workers]
    sb.close()
    sb.close()
    with pytest.raises(SandboxError):
        sb.run("1")
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
