"""The BirdCLEF 2021 dataset: its layout and label rules, and the chunk tables stage prepare writes."""
