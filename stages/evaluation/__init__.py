"""Evaluation of a trained model: its scores on a split, and the numbers stage evaluate writes."""
