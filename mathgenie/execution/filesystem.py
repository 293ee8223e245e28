"""The sandbox's view of the filesystem: a fresh root that holds only what Python needs, read-only.

Built once per worker inside its own mount namespace, then ``pivot_root`` into it and detach the host's tree. What is
not listed here (home directories, HF_HOME and its token, the host's /tmp, the project's data, /sys) does not exist
inside.

Python may live anywhere a user can put it: /tmp, /home, ~/.local, a uv- or conda-managed prefix, behind a chain of
symlinks, in a path with spaces. Every bound path is resolved to its real location, and every symlink on the way is
recreated in the root view, so the interpreter sees the paths it was started with. /tmp is special: inside the sandbox
it is each session's private, size-limited scratch, a fresh tmpfs mounted over it. Host paths under /tmp are therefore
bound once under ``HELD`` and laid back into every fresh scratch by `mount_scratch` (read-only, secrets still
masked), instead of being hidden by it.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

from mathgenie.execution import linux

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
             "timezone", "alternatives", "os-release", "mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom")
# Credentials that must stay hidden even when a bound tree (an editable source checkout, say) contains them.
SECRET_NAMES = (".cache/huggingface", ".huggingface", ".netrc", ".git-credentials", ".ssh", ".aws", ".config/gcloud",
                ".docker", ".kaggle", ".pypirc", ".env")
SCRATCH = "/tmp"  # each session's private, writable directory inside the sandbox
HELD = "/.mathgenie-held"  # where host paths under SCRATCH wait, read-only, to be laid into each fresh scratch
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _AT_RECURSIVE = 0x1, 0x2, 0x4, 0x8000


def python_paths(package_dir: str, injected: str | None = None) -> list[str]:
    """The Python installation, site-packages, source trees installed in editable mode, and this package.
    ``injected`` is the directory put on PYTHONPATH only to import mathgenie; just the package inside it is bound."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, sys.executable,
             os.path.dirname(os.path.realpath(sys.executable)), package_dir}
    paths.update(p for p in sys.path if p and p != injected and os.path.exists(p))
    return sorted(paths)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """``path`` with every symlink on it followed; each symlink met (a chain included) is recorded in ``links``."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    current = "/"
    for i, part in enumerate(parts):
        candidate = os.path.join(current, part)
        if os.path.islink(candidate) and depth < 40:
            target = os.readlink(candidate)
            links[candidate] = target
            return _resolve(os.path.join(current, target, *parts[i + 1:]), links, depth + 1)
        current = candidate
    return current


def _outermost(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths}):
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return kept


def _make_readonly(target: str) -> None:
    attr = ctypes.create_string_buffer(
        (_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV).to_bytes(8, "little") + bytes(24))
    if linux._libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), target.encode(), ctypes.c_uint(_AT_RECURSIVE),
                           attr, ctypes.c_size_t(32)) == 0:
        return
    # mount_setattr needs Linux >= 5.12; fall back to remounting every mount under the target one by one.
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    with open("/proc/self/mountinfo") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f]
    for point in points:
        if _under(point, target):
            linux.mount(None, point, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID
                        | linux.MS_NODEV)


def _bind(source: str, target: str, *, writable_device: bool = False) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if writable_device:
        linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_NOSUID | linux.MS_NOEXEC)
    else:
        _make_readonly(target)


def _link(target_text: str, at: str) -> None:
    os.makedirs(os.path.dirname(at), exist_ok=True)
    if not os.path.lexists(at):
        os.symlink(target_text, at)


def _staging_dir(binds: list[str]) -> str:
    for candidate in ("/mnt", "/tmp", "/media", "/srv", "/var/tmp", "/opt"):
        disjoint = all(not (_under(b, candidate) or _under(candidate, b)) for b in binds)
        if os.path.isdir(candidate) and not os.path.islink(candidate) and disjoint:
            return candidate
    raise OSError(2, "no empty mount point (/mnt, /tmp, /media, /srv, /var/tmp, /opt) for the sandbox root")


def secret_paths(home: str | None) -> list[str]:
    paths = [os.path.expanduser(f"~/{name}") for name in SECRET_NAMES]
    if home:
        paths += [os.path.join(home, name) for name in SECRET_NAMES]
    for var in ("HF_HOME", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            paths.append(os.environ[var])
    return paths


def _placed(path: str) -> str:
    """Where a host path sits in the root view: under HELD if the scratch mount would hide it."""
    return HELD + path if _under(path, SCRATCH) else path


def _mask_secrets(root: str, binds: list[str], secrets: list[str]) -> None:
    for secret in {_resolve(p, {}) for p in secrets}:
        at = root + _placed(secret)
        if any(_under(secret, b) for b in binds) and os.path.lexists(at):
            if os.path.isdir(at):
                linux.mount("tmpfs", at, "tmpfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV, "size=4k")
            else:
                linux.mount(f"{root}/dev/null", at, None, linux.MS_BIND)


def _system_files(root: str) -> None:
    for name in DEVICES:
        _bind(f"/dev/{name}", f"{root}/dev/{name}", writable_device=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for directory in ("proc", SCRATCH.lstrip("/"), "dev/shm"):
        os.makedirs(f"{root}/{directory}", exist_ok=True)


def enter_root_view(readonly_paths: list[str], secrets: list[str]) -> list[list[str]]:
    """Replace this mount namespace's root with a tmpfs holding read-only binds of ``readonly_paths`` (plus system
    dirs, a few /etc files and harmless devices), with ``secrets`` masked, and a fresh /proc. Needs CAP_SYS_ADMIN in
    the user namespace that owns the current mount namespace. Returns what `mount_scratch` lays into each fresh
    scratch: ``["link", path, target]`` and ``["bind", path]`` entries for host paths under SCRATCH."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    links: dict[str, str] = {}
    system = [*SYSTEM_PATHS, *(f"/etc/{name}" for name in ETC_FILES)]
    wanted = [p for p in system if os.path.lexists(p)] + list(readonly_paths)
    binds = _outermost([real for real in (_resolve(p, links) for p in wanted) if os.path.exists(real)])
    root = _staging_dir(binds)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=8m")
    scratch: list[list[str]] = []
    for path in binds:
        _bind(path, root + _placed(path))
        if _under(path, SCRATCH):
            scratch.append(["bind", path])
    for at, text in sorted(links.items()):
        if any(_under(at, b) for b in binds):
            continue  # visible already: the bind holds the link itself
        if _under(at, SCRATCH):
            scratch.append(["link", at, text])
        else:
            _link(text, root + at)
    _system_files(root)
    _mask_secrets(root, binds, secrets)
    # Mounted before the host's /proc goes away: the kernel only lets a user namespace mount proc while a fully
    # visible one exists in its mount namespace.
    linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the host's tree is unreachable from here on
    os.chdir("/")
    linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID
                | linux.MS_NODEV)
    return sorted(scratch, key=lambda entry: entry[1])


def scratch_names(entries: list[list[str]]) -> frozenset[str]:
    """The top-level names in the scratch that hold laid-in host paths."""
    return frozenset(entry[1][len(SCRATCH) + 1:].split("/")[0] for entry in entries)


def session_dir(entries: list[list[str]]) -> str:
    """The session's working directory: a fresh directory in the scratch, named apart from the host paths laid into
    it, so that ``os.listdir('.')`` shows the session's own files only."""
    taken = scratch_names(entries)
    name = next(f"session{i or ''}" for i in range(len(taken) + 1) if f"session{i or ''}" not in taken)
    return f"{SCRATCH}/{name}"


def mount_scratch(options: str, entries: list[list[str]]) -> None:
    """Mount a fresh tmpfs on SCRATCH (``options``: size, mode, owner) and lay the held host paths back into it,
    read-only. Their mount points and links belong to root, so a session running as nobody cannot replace them."""
    linux.mount("tmpfs", SCRATCH, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, options)
    for entry in entries:
        if entry[0] == "link":
            _link(entry[2], entry[1])
        else:
            _bind(HELD + entry[1], entry[1])
