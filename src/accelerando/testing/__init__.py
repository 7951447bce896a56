"""Small, fast fixtures shipped with accelerando so that users and our tests can exercise every API offline."""

from accelerando.testing.scores import TEST_SOUNDFONT, test_soundfont, write_test_score

__all__ = ["write_test_score", "test_soundfont", "TEST_SOUNDFONT"]
