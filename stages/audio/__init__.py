"""Audio bytes -> samples -> log-mels -> the float16 feature memmap (stage featurize), and Ogg writing."""
