"""Finding audio files in a folder: what predict scores and what stage background featurizes."""

from __future__ import annotations

from pathlib import Path

# What the folder search takes as audio (all decodable by libsndfile).
AUDIO_SUFFIXES = {".ogg", ".oga", ".opus", ".wav", ".flac", ".mp3", ".aif", ".aiff", ".w64"}


def find_audio(folder: Path) -> list[Path]:
    """Audio files under `folder` (or `folder` itself, a file), in sorted order; hidden ones skipped."""
    if folder.is_file():
        return [folder]
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))
