"""Headless core: never imports Textual or torch, so scripts and tests can use it alone."""
