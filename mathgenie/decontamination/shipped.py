"""The eval-set index that ships inside the package (``data/eval_index.npz``, see ``data/README.md``): hashes of the
test questions of every benchmark of `mathgenie eval`, so decontamination needs neither the Hub nor the eval texts."""

from __future__ import annotations

import functools
from pathlib import Path

from mathgenie.decontamination.index import Decontaminator

SHIPPED_INDEX = Path(__file__).parent / "data" / "eval_index.npz"


@functools.cache
def load_index(path: str | None = None) -> Decontaminator:
    """The index in ``path`` (an ``.npz`` written by `Decontaminator.save`), loaded once per process."""
    path = Path(path) if path else SHIPPED_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"decontamination index {path} not found: build one with `python -m "
                                "mathgenie.evaluation.eval_index --eval-data-dir DIR --out PATH`")
    return Decontaminator.load(path)


def shipped_index() -> Decontaminator:
    return load_index(None)
