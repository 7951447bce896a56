import subprocess
import sys


def test_import_is_lean_and_side_effect_free():
    code = (
        "import sys, logging; import accelerando, accelerando.cli.main, accelerando.data.split;"
        "heavy = [m for m in ('torch', 'music21', 'librosa', 'fluidsynth', 'mir_eval') if m in sys.modules];"
        "print(','.join(heavy)); print(len(logging.getLogger().handlers))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0"] or out == ["", "0"], out  # nothing heavy imported, no logging handlers installed


def test_cli_help_lists_subcommands(capsys):
    from accelerando.cli.main import main

    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "data" in out and "demo" in out
