"""Evaluation on GSM8K, MATH, MATH-500, SVAMP, SimulEq and Mathematics (`mathgenie eval`), answer scoring, and
decontamination of generated data against these eval sets (`mathgenie decontaminate`)."""

from pathlib import Path

# `evaluate.load(METRIC_PATH)`: the answer-accuracy metric (works offline).
METRIC_PATH = str(Path(__file__).parent / "metrics" / "answer_accuracy")
