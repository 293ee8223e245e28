"""The worker's entry point: ``python -m mathgenie.execution.launcher CONFIG_JSON``, started by the Sandbox.

Isolated, it creates a user namespace (the host writes its id maps), then new mount, network, ipc, uts, cgroup and
pid namespaces, and forks the zygote as pid 1 of the new pid namespace; the zygote builds the read-only root view,
imports and warms up the math stack, and serves (``zygote.py``). Unisolated (``allow_unisolated=True`` on a machine
without namespaces), this process is the zygote.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import traceback

import mathgenie
from mathgenie.execution import cell, linux, protocol
from mathgenie.execution.filesystem import enter_root_view, mount_scratch, python_paths
from mathgenie.execution.zygote import HOST_IN, HOST_OUT, Zygote

WARMUP = """\
from sympy import *
x, y = symbols('x y')
r = [solve(x**2 - 5*x + 6, x), solve([x + y - 3, x - y - 1], [x, y]), simplify((x**2 - 1)/(x - 1)), expand((x + 1)**3),
     factor(x**2 - 1), Rational(3, 4) + Rational(1, 6), sqrt(8), N(pi, 10), integrate(x**2, x), diff(sin(x), x),
     limit(sin(x)/x, x, 0), Matrix([[1, 2], [3, 4]]).det(), nsimplify(0.5), binomial(5, 2), gcd(12, 18), isprime(7)]
print(r, latex(x**2))
import math, numpy as np
from fractions import Fraction
print(np.array([1, 2, 3]).sum(), np.linalg.solve([[1, 2], [3, 4]], [5, 6]))
print(Fraction(1, 3) + Fraction(1, 6), math.comb(5, 2))
r[0]
"""


def _warm_up(preload: list[str], workdir: str) -> None:
    """Import the math stack and run typical code once, so every forked session starts warm."""
    for name in preload:
        __import__(name)
    saved = [os.dup(1), os.dup(2)]
    scratch = os.memfd_create("warmup", 0)
    os.dup2(scratch, cell.OUTPUT_FD)
    try:
        warm = cell.Cell(workdir, 2000)
        warm.run(WARMUP)
        warm.run("1/0")
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        for fd in (*saved, scratch):
            os.close(fd)
    os.chdir("/")
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the zygote's objects in every session


_stage = "isolation"  # what failed, for the host: "isolation" (namespaces, root view), "startup", "serving"


def _zygote(config: dict) -> None:
    global _stage
    if config["isolated"]:
        # Dies with the launcher. (Unisolated, the zygote is the launcher, whose parent is a host *thread* that may
        # end at any time; it exits on EOF from the host instead.)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        package_dir = os.path.dirname(os.path.abspath(mathgenie.__file__))
        config["scratch"] = enter_root_view(
            python_paths(package_dir, config.get("injected_path")) + config["readonly_paths"], config["secret_paths"])
        linux.sethostname("sandbox")
        mount_scratch("size=16m,mode=0700", config["scratch"])
        warm_dir = "/tmp"
    else:
        warm_dir = tempfile.mkdtemp(prefix="mathgenie-warmup-")
    _stage = "startup"
    _warm_up(config["preload"], warm_dir)
    if not config["isolated"]:
        shutil.rmtree(warm_dir, ignore_errors=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    protocol.write_frame(HOST_OUT, {"event": "ready", "pid": os.getpid(), "uid": os.getuid()})
    _stage = "serving"
    Zygote(config).serve()


def main() -> None:
    config = json.loads(sys.argv[1])
    for fd, target in ((0, HOST_IN), (1, HOST_OUT)):
        os.dup2(fd, target)
        os.set_inheritable(target, False)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray output of the worker itself goes to its log (stderr)
    os.close(devnull)
    try:
        if config["isolated"]:
            linux.unshare(linux.CLONE_NEWUSER)
            protocol.write_frame(HOST_OUT, {"event": "map_ids", "pid": os.getpid()})
            if (protocol.read_frame(HOST_IN) or {}).get("event") != "ids_mapped":
                os._exit(1)
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
                          | linux.CLONE_NEWPID | linux.CLONE_NEWCGROUP)
            pid = os.fork()
            if pid:
                os.close(HOST_IN)
                os.close(HOST_OUT)
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        _zygote(config)
    except BaseException as exc:  # noqa: BLE001 -- the host needs the reason, whatever it is
        try:
            traceback.print_exc()  # into the worker's log
            protocol.write_frame(HOST_OUT, {"event": "fatal", "stage": _stage, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(1)


if __name__ == "__main__":
    main()
