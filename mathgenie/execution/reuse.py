"""May a session's process serve the next session? A conservative static check of every cell the session ran.

Forking a fresh process per session costs CPU for copy-on-write faults (each page of sympy the code touches is
copied), several times the cost of a typical snippet. A process whose session only computed -- imported math
libraries, called functions, built its own objects -- is handed to the next session with fresh globals, an emptied
private directory and fresh stdout/stderr. Anything that could leave state behind in the process (importing other
modules, assigning attributes of library objects, private or dunder access, dynamic code, known global setters such as
``np.set_printoptions``) marks the process as used, and it is killed when its session closes.

This guards against accidental leaks between solutions written by a model; it is not a boundary against code written
to defeat it (see the README). ``Sandbox(reuse_processes=False)`` forks a fresh process for every session.
"""

from __future__ import annotations

import ast

SAFE_MODULES = frozenset(
    "sympy numpy mpmath math cmath fractions decimal numbers itertools functools collections operator statistics "
    "random heapq bisect string re typing dataclasses copy enum datetime calendar time array textwrap pprint "
    "unicodedata".split()
)
# Names that reach outside the session's own objects (dynamic code, frames, the process, files).
DENIED_NAMES = frozenset(
    "exec eval compile open getattr setattr delattr globals locals vars breakpoint help memoryview "
    "__import__ __builtins__ __loader__ __spec__".split()
)
# Library calls that change process-wide state read by later code.
STATE_SETTERS = frozenset(
    "set_printoptions seterr seterrcall setbufsize set_string_function seed set_state setstate setcontext "
    "init_printing init_session setrecursionlimit settrace setprofile register set_global_settings "
    "setdefaultencoding".split()
)
# Standard modules that leading attributes of allowed modules (``np.os``) would expose.
UNSAFE_ATTRIBUTES = frozenset(
    "os sys subprocess builtins importlib ctypes io shutil pathlib socket threading multiprocessing concurrent signal "
    "gc inspect types warnings atexit pickle marshal tempfile glob platform resource fcntl posix mmap weakref code "
    "codeop runpy pkgutil site sysconfig linecache traceback logging locale codecs select selectors asyncio "
    "faulthandler tracemalloc unittest pdb bdb webbrowser urllib http ssl zipimport copyreg".split()
)
MUTATING_METHODS = frozenset(
    "append extend insert remove pop popitem clear update setdefault add discard sort reverse difference_update "
    "intersection_update symmetric_difference_update".split()
)
MAX_CODE_CHARS = 100_000


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


class _Checker(ast.NodeVisitor):
    def __init__(self, module_names: set[str]) -> None:
        self.module_names = module_names  # names bound to modules or to objects reached through them
        self.clean = True

    def _reject(self) -> None:
        self.clean = False

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] not in SAFE_MODULES:
                self._reject()
            self.module_names.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module or node.module.split(".")[0] not in SAFE_MODULES:
            self._reject()
        for alias in node.names:
            if alias.name != "*":
                self.module_names.add(alias.asname or alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DENIED_NAMES or (node.id.startswith("__") and node.id.endswith("__")):
            self._reject()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        if node.attr in STATE_SETTERS or node.attr in UNSAFE_ATTRIBUTES or (node.attr.startswith("_") and not own):
            self._reject()
        if isinstance(node.ctx, (ast.Store, ast.Del)) and not own:
            self._reject()
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            root = _root(node)
            if not isinstance(root, ast.Name) or root.id in self.module_names or isinstance(node.value, ast.Call):
                self._reject()
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # ``t = np.core.something`` makes ``t`` an alias of library state; mutating it later must count.
        root = _root(node.value)
        if isinstance(node.value, (ast.Attribute, ast.Name)) and isinstance(root, ast.Name) \
                and root.id in self.module_names:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.module_names.add(target.id)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
            root = _root(func.value)
            if not isinstance(root, ast.Name) or root.id in self.module_names:
                self._reject()
        if isinstance(func, ast.Name) and func.id == "type" and len(node.args) == 3:
            self._reject()
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            if not isinstance(base, ast.Name) or base.id in self.module_names:
                self._reject()
        if node.keywords:
            self._reject()
        self.generic_visit(node)


class ReuseTracker:
    """Follows one session's cells; ``clean`` stays true while every cell passed the check."""

    def __init__(self) -> None:
        self.module_names: set[str] = set()
        self.clean = True

    def observe(self, code: str) -> None:
        if not self.clean:
            return
        if len(code) > MAX_CODE_CHARS:
            self.clean = False
            return
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return  # the session fails to compile it too, so nothing ran
        except (ValueError, RecursionError, MemoryError):
            self.clean = False
            return
        checker = _Checker(self.module_names)
        try:
            checker.visit(tree)
        except RecursionError:
            checker.clean = False
        self.clean = checker.clean
