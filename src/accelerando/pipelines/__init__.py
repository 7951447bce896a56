"""Inference orchestration: validate inputs, run the scheduler loop over a backbone, decode."""
