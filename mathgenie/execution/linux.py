"""Thin ctypes wrappers for the Linux isolation primitives the sandbox needs.

Python 3.11 has no ``os.unshare``/``os.setns``/``mount``; these call libc directly and raise ``OSError`` with the errno,
so a caller can say which protection is missing. Nothing here is specific to the sandbox's policy.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                 | CLONE_NEWNET)
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount({source!r} -> {target!r}, {fstype!r}, {flags:#x})")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = {"x86_64": 155, "aarch64": 41}[platform.machine()]
    _check(_libc.syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), f"prctl({option})")


def drop_all_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets (needed when the process stays uid 0
    of its user namespace: without this it keeps CAP_SYS_ADMIN there and could unmount the masks over secrets)."""
    cap = 0
    while True:
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:  # EINVAL past the last capability this kernel knows
            break
        cap += 1
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two empty __user_cap_data_struct
    _check(_libc.capset(header, data), "capset")


# --- seccomp ----------------------------------------------------------------------------------------------------------
# Syscalls no math snippet needs and that widen the kernel surface (or let code escape namespaces, reach the network,
# or poke other processes). Numbers from the kernel's asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64).
_DENIED = ("socket ptrace process_vm_readv process_vm_writev mount umount2 pivot_root chroot unshare setns keyctl "
           "add_key request_key bpf perf_event_open userfaultfd io_uring_setup io_uring_enter io_uring_register "
           "kexec_load kexec_file_load init_module finit_module delete_module reboot swapon swapoff acct syslog "
           "open_by_handle_at name_to_handle_at fanotify_init lookup_dcookie open_tree move_mount fsopen fsconfig "
           "fsmount fspick mount_setattr quotactl personality vhangup pidfd_getfd process_madvise kcmp iopl ioperm "
           "uselib").split()
_SYSCALLS = {
    "x86_64": (0xC000003E, {
        "socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168,
        "acct": 163, "syslog": 103, "open_by_handle_at": 304, "name_to_handle_at": 303, "fanotify_init": 300,
        "lookup_dcookie": 212, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "quotactl": 179, "personality": 135, "vhangup": 153, "pidfd_getfd": 438,
        "process_madvise": 440, "kcmp": 312, "iopl": 172, "ioperm": 173, "uselib": 134, "clone": 56, "clone3": 435,
    }),
    "aarch64": (0xC00000B7, {
        "socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225,
        "acct": 89, "syslog": 116, "open_by_handle_at": 265, "name_to_handle_at": 264, "fanotify_init": 262,
        "lookup_dcookie": 18, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "quotactl": 60, "personality": 92, "vhangup": 58, "pidfd_getfd": 438,
        "process_madvise": 440, "kcmp": 272, "clone": 220, "clone3": 435,
    }),
}


def seccomp_supported() -> bool:
    return platform.machine() in _SYSCALLS


def install_seccomp_filter() -> None:
    """Deny the syscalls in ``_DENIED`` with EPERM, deny ``clone`` with any CLONE_NEW* flag (no new namespaces, so no
    new user namespace with fresh capabilities), make ``clone3`` return ENOSYS (libc then falls back to ``clone``,
    whose flags a classic BPF filter can inspect), and kill the process on a foreign syscall ABI (x32, i386).
    Requires no_new_privs (set here)."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise OSError(95, f"no seccomp syscall table for architecture {machine!r}")
    audit_arch, numbers = _SYSCALLS[machine]
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno = lambda e: 0x00050000 | e  # noqa: E731
    denied = [numbers[name] for name in _DENIED if name in numbers]
    prog: list[tuple[int, int, int, int]] = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, audit_arch),
        (ret, 0, 0, kill),
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, errno(1))]  # x32 ABI
    for nr in denied:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, errno(1))]
    prog += [
        (jeq, 0, 1, numbers["clone3"]),
        (ret, 0, 0, errno(38)),  # ENOSYS
        (jeq, 0, 4, numbers["clone"]),
        (ld_abs, 0, 0, 16),  # low 32 bits of args[0] (clone flags) on little-endian
        (jset, 0, 1, CLONE_NEW_ANY | CLONE_NEWTIME),
        (ret, 0, 0, errno(1)),
        (ret, 0, 0, allow),
        (ret, 0, 0, allow),
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.c_char_p(fprog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_SECCOMP)")
