"""Cached and sparse inference: recompute only what an edit touches (SIGE-Audio)."""
