"""Training loops and losses. Kept apart from inference code: nothing under models/ or pipelines/ imports this."""
