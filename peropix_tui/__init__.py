"""peropix-tui: generate, collect and curate anime-style images from a terminal."""

__version__ = "0.1.0"
