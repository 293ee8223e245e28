"""Run model-written Python in isolated, stateful sessions (the ``<|execution|>`` blocks of LCE solutions).

>>> from mathgenie.execution import Sandbox
>>> with Sandbox() as sandbox:
...     sandbox.run("from sympy import *\nx = symbols('x')\nsolve(x**2 - 4, x)", session="q1").output
'[-2, 2]\n'
"""

from mathgenie.execution.sandbox import ExecutionResult, Sandbox, SandboxError, SandboxUnavailableError

__all__ = ["ExecutionResult", "Sandbox", "SandboxError", "SandboxUnavailableError"]
