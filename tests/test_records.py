"""Records and checkpoints are portable: they name no folder of the machine that wrote them."""

import json
from pathlib import Path

import torch

from dkdlib import Config, fit
from dkdlib.checkpoint import load_checkpoint
from dkdlib.results import load_records, write_record

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"


def test_a_record_and_a_checkpoint_name_no_folder_of_this_machine(tmp_path, tiny_data):
    base = dict(model="resnet8", dataset="synthetic", epochs=1, batch_size=32, val_size=200, train_size=600,
                test_size=200, device="cpu", out_dir=str(tmp_path / "runs"))  # fmt: skip
    teacher = fit(Config(**base, name="t"), data=tiny_data, progress=False)
    student = Config(**base, method="dkd", teacher=str(teacher.checkpoint), data=str(tmp_path / "x.npz"))
    run = fit(student, data=tiny_data, progress=False)
    text = run.record.read_text()
    assert str(tmp_path) not in text
    record = json.loads(text)
    assert record["config"]["teacher"] == "checkpoints/t.pt" and record["config"]["out_dir"] == "."
    assert (
        record["config"]["data"] == "x.npz"
        and record["checkpoint"] == f"checkpoints/{run.config.run_name()}.pt"
    )
    assert record["name"] == student.run_name()  # the identity is the same from the portable config
    saved = load_checkpoint(run.checkpoint)["config"]
    assert str(tmp_path) not in json.dumps(saved)
    assert fit(student, data=tiny_data, progress=False).record is None  # and it still loads as finished
    assert torch.equal(next(iter(run.model.state_dict().values())),
                       next(iter(load_checkpoint(run.checkpoint)["model"].values())))  # fmt: skip


def test_committed_records_are_portable_and_named_by_their_identity():
    from dkdlib.config import Config

    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        record = json.loads(path.read_text())
        text = json.dumps({k: v for k, v in record.items() if k != "migrated"})
        assert '"/' not in text, f"{path.name} names an absolute path"
        config = record["config"]
        assert Config(**{**config, "milestones": tuple(config["milestones"])}).run_name() == record["name"]


def test_records_load_in_the_order_they_were_written_even_within_one_second(tmp_path):
    # Names sort against the order of writing (z, y, x, ...); a stamp in whole seconds sorted them by name.
    names = [chr(ord("z") - i) for i in range(5)]
    for name in names:
        write_record(tmp_path, {"name": name})
    assert [r["name"] for r in load_records(tmp_path)] == names
    # A record written before names had microseconds comes first within its second.
    (tmp_path / "20000101T000000-old-0000abcd.json").write_text(json.dumps({"name": "old"}))
    (tmp_path / "20000101T000000.000001-new-0000abcd.json").write_text(json.dumps({"name": "new"}))
    assert [r["name"] for r in load_records(tmp_path)][:2] == ["old", "new"]
