"""The files stage evaluate writes into reports/eval/<model>/, named once for it and the report stage."""

METRICS = "metrics.json"
SUBMISSION = "submission.csv"
PER_CLASS_AP = "per_class_ap.csv"
PRECISION_RECALL = "precision_recall.json"
