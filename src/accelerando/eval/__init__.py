"""Music-aware evaluation. One metric per module; heavy dependencies (librosa, mir_eval) are imported inside
functions so that importing :mod:`accelerando.eval` stays cheap. Install them with ``pip install accelerando[eval]``.
"""
