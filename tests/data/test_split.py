import subprocess
import sys
from collections import Counter

from accelerando.data.split import split_for, training_splits


def test_split_is_a_pure_function_of_the_score_id():
    ids = [f"bach/bwv{i}.mxl" for i in range(300)]
    here = [split_for(i) for i in ids]
    code = (
        "from accelerando.data.split import split_for; "
        "print(','.join(split_for(f'bach/bwv{i}.mxl') for i in range(300)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    ).stdout.strip()
    assert other.split(",") == here


def test_split_fractions_and_training_excludes_test():
    counts = Counter(split_for(f"x/{i}") for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.90) < 0.01
    assert abs(counts["test"] / 20000 - 0.05) < 0.01
    assert "test" not in training_splits()
