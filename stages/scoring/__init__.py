"""Scoring math: metrics (mAP, row-wise F1), the call threshold and baselines, bootstrap intervals."""
