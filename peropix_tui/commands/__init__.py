"""Headless command implementations behind `peropix <command>`; they never import Textual."""
