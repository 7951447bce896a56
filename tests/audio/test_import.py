import subprocess
import sys


def test_import_is_lean():
    code = (
        "import sys, accelerando.audio as a; "
        "assert set(a.__all__) <= set(dir(a)); "
        "heavy = [m for m in ('librosa', 'pyloudnorm', 'scipy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
