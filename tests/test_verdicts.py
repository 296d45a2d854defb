"""The one rule for 'beyond the seed spread' (dkdlib.verdicts)."""

import pytest

from dkdlib.verdicts import compare_seeds


def test_one_seed_cannot_tell():
    v = compare_seeds([45.0], [49.4], names=("CE", "DKD"))
    assert v.beyond is None and v.spread is None and v.seeds == (1, 1)
    assert v.gap == pytest.approx(4.4)
    assert v.text == "DKD − CE = +4.40 points (1 and 1 seed(s)): one seed is not enough to tell"
    assert compare_seeds([45.0, 46.0], [50.0]).beyond is None  # one side with one seed is enough to stop


def test_gap_larger_than_the_larger_range_is_beyond():
    v = compare_seeds([44.0, 46.0], [49.0, 50.5], names=("CE", "DKD"))
    assert v.spread == pytest.approx(2.0) and v.gap == pytest.approx(4.75) and v.beyond is True
    assert "beyond the seed spread (the larger seed range is 2.00 points)" in v.text
    assert compare_seeds([49.0, 50.5], [44.0, 46.0]).beyond is True  # the sign does not matter


def test_gap_within_the_larger_range_is_not_beyond():
    v = compare_seeds([44.0, 46.0], [43.0, 49.0])  # ranges 2 and 6, gap 1
    assert v.spread == pytest.approx(6.0) and v.beyond is False
    assert "within the seed spread" in str(v)
    # a gap equal to the spread is not beyond it
    assert compare_seeds([0.0, 1.0], [1.0, 2.0]).beyond is False


def test_empty_side_is_an_error():
    with pytest.raises(ValueError):
        compare_seeds([], [1.0])


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["row", "seed", "test_acc", "val_acc"])


def test_remarks_a_student_above_its_teacher():
    from dkdlib.verdicts import remarks

    frame = _frame([("teacher", 0, 0.4935, 0.50), ("CE", 0, 0.4565, 0.46), ("DKD", 0, 0.4940, 0.49)])
    lines = remarks(frame)
    assert len(lines) == 1
    assert lines[0].startswith(
        "DKD ends above its teacher: 49.40% against 49.35% on the test set (+0.05 points)"
    )
    assert remarks(frame[frame["row"] != "teacher"]) == []  # no teacher: nothing to say


def test_remarks_a_validation_test_disagreement():
    from dkdlib.verdicts import remarks

    frame = _frame([("CE", 0, 0.450, 0.470), ("CE", 1, 0.452, 0.468), ("DKD", 0, 0.455, 0.465),
                    ("DKD", 1, 0.451, 0.467), ("KD", 0, 0.440, 0.460)])  # fmt: skip
    lines = remarks(frame)
    assert any(line.startswith("DKD − CE is -0.30 points on the validation images but +0.20 on the test")
               for line in lines)  # fmt: skip
    assert not any(line.startswith("KD − CE") for line in lines)  # worse on both: no disagreement
    assert any("best recipe on the validation images is CE (46.90%), on the test images DKD (45.30%)" in line
               for line in lines)  # fmt: skip
    assert remarks(frame.drop(columns="val_acc")) == []  # no validation accuracy: no disagreement to tell
