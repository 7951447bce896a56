"""The process-level malloc setting (accelerando.runtime) and the command's handling of its variable."""

import platform
import subprocess
import sys

import pytest

from accelerando import runtime
from accelerando.cli.main import main
from accelerando.errors import UserError


def test_keep_is_the_default_and_default_leaves_glibc_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv(runtime.MALLOC_ENV, raising=False)
    assert runtime.apply_malloc_setting() and calls == [1]
    monkeypatch.setenv(runtime.MALLOC_ENV, " Keep ")
    assert runtime.apply_malloc_setting() and calls == [1, 1]
    monkeypatch.setenv(runtime.MALLOC_ENV, "default")
    assert not runtime.apply_malloc_setting() and calls == [1, 1]


def test_a_bad_value_is_named_and_the_command_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: pytest.fail("applied despite a bad value"))
    monkeypatch.setenv(runtime.MALLOC_ENV, "jemalloc")
    with pytest.raises(UserError, match="ACCELERANDO_MALLOC='jemalloc'; use keep or default"):
        runtime.apply_malloc_setting()
    assert main(["--version"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ACCELERANDO_MALLOC='jemalloc'" in err


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's"
)
def test_glibc_takes_every_setting():
    """In a child process (the settings are process-wide): glibc accepts each value (mallopt returns 1)."""
    code = "from accelerando.runtime import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"
