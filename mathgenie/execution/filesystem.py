"""The sandbox's view of the filesystem: a fresh root that holds only what Python needs, read-only.

Built once per worker inside its own mount namespace, then ``pivot_root`` into it and detach the host's tree. What is
not listed here (home directories, HF_HOME and its token, /tmp, the project's data, /sys) does not exist inside.
"""

from __future__ import annotations

import ctypes
import os
import sys

from mathgenie.execution import linux

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
             "timezone", "alternatives", "os-release", "mime.types")
DEVICES = ("null", "zero", "full", "random", "urandom")
# Credentials that must stay hidden even when a bound tree (an editable source checkout, say) contains them.
SECRET_NAMES = (".cache/huggingface", ".huggingface", ".netrc", ".git-credentials", ".ssh", ".aws", ".config/gcloud",
                ".docker", ".kaggle", ".pypirc", ".env")
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _AT_RECURSIVE = 0x1, 0x2, 0x4, 0x8000


def python_paths(package_dir: str, injected: str | None = None) -> list[str]:
    """The Python installation, site-packages, source trees installed in editable mode, and this package.
    ``injected`` is the directory put on PYTHONPATH only to import mathgenie; just the package inside it is bound."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), package_dir}
    paths.update(p for p in sys.path if p and p != injected and os.path.exists(p))
    return sorted(paths)


def _outermost(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _make_readonly(target: str) -> None:
    attr = ctypes.create_string_buffer(
        (_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV).to_bytes(8, "little") + bytes(24))
    if linux._libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), target.encode(), ctypes.c_uint(_AT_RECURSIVE),
                           attr, ctypes.c_size_t(32)) == 0:
        return
    # mount_setattr needs Linux >= 5.12; fall back to remounting every mount under the target one by one.
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if point == target or point.startswith(target.rstrip("/") + "/"):
            linux.mount(None, point, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID
                        | linux.MS_NODEV)


def _bind(source: str, root: str, *, writable_device: bool = False) -> None:
    target = root + source
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if writable_device:
        linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_NOSUID | linux.MS_NOEXEC)
    else:
        _make_readonly(target)


def _staging_dir(binds: list[str]) -> str:
    for candidate in ("/mnt", "/tmp", "/media", "/srv", "/var/tmp", "/opt"):
        disjoint = all(not (b == candidate or b.startswith(candidate + "/") or candidate.startswith(b + "/"))
                       for b in binds)
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


def enter_root_view(readonly_paths: list[str], secrets: list[str]) -> None:
    """Replace this mount namespace's root with a tmpfs holding read-only binds of ``readonly_paths`` (plus system
    dirs, a few /etc files and harmless devices), with ``secrets`` masked, and a fresh /proc. Needs CAP_SYS_ADMIN in
    the user namespace that owns the current mount namespace."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    binds = _outermost([p for p in SYSTEM_PATHS if os.path.lexists(p)] + list(readonly_paths))
    root = _staging_dir(binds)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=8m")
    for path in binds:
        _bind(path, root)
    for name in ETC_FILES:
        if os.path.lexists(f"/etc/{name}"):
            _bind(f"/etc/{name}", root)
    for name in DEVICES:
        _bind(f"/dev/{name}", root, writable_device=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for directory in ("proc", "tmp", "dev/shm"):
        os.makedirs(f"{root}/{directory}", exist_ok=True)
    for secret in {os.path.abspath(p) for p in secrets}:
        inside = any(secret == b or secret.startswith(b.rstrip("/") + "/") for b in binds)
        if inside and os.path.lexists(root + secret):
            if os.path.isdir(root + secret):
                linux.mount("tmpfs", root + secret, "tmpfs", linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
                            "size=4k")
            else:
                linux.mount(f"{root}/dev/null", root + secret, None, linux.MS_BIND)
    # Mounted before the host's /proc goes away: the kernel only lets a user namespace mount proc while a fully
    # visible one exists in its mount namespace.
    linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the host's tree is unreachable from here on
    os.chdir("/")
    linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID
                | linux.MS_NODEV)
