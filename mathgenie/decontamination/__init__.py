"""Decontamination against the eval sets: vectorized hashing (`hashing`), the eval index and its scan (`index`), the
index shipped with the package (`shipped`), and dropping rows of a dataset with a report (`dataset`)."""

from mathgenie.decontamination.dataset import DecontaminationReport, decontaminate
from mathgenie.decontamination.index import REASONS, DecontaminationError, Decontaminator
from mathgenie.decontamination.shipped import load_index, shipped_index

__all__ = ["REASONS", "DecontaminationError", "DecontaminationReport", "Decontaminator", "decontaminate",
           "load_index", "shipped_index"]
