"""One module per screen; widgets that belong to one screen live beside it."""
