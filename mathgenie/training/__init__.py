"""Training recipes on TRL's SFTTrainer: the back-translation model (M_backtrans), M_code (the solver/verifier) and
MathGenieLM (LCE SFT on the training mix).

Names are imported lazily so that ``mathgenie --help`` (which imports ``mathgenie.training.cli``) stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BacktranslationConfig": "mathgenie.training.config",
    "MathGenieLMConfig": "mathgenie.training.config",
    "MCodeConfig": "mathgenie.training.config",
    "MixSource": "mathgenie.training.mix",
    "RECIPES": "mathgenie.training.config",
    "train": "mathgenie.training.recipes",
    "TrainResult": "mathgenie.training.recipes",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mathgenie.training' has no attribute {name!r}")
