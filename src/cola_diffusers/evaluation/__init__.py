"""Evaluation: the official 8-task benchmark and its scoring, the embedded demo task, and accuracy sweeps."""
