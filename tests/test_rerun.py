"""A finished training state is never resumed: the mark (checkpoints.mark_finished), the
refusal (resume_training) and the records a run from scratch clears (clear_records).
The training loops' reruns are tested in test_pretrain.py and test_finetune.py."""
import logging

import torch

from cocon.train import checkpoints
from cocon.train.distributed import Runtime


def _training(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [5])
    return model, optimizer, scheduler


def test_a_finished_state_is_never_resumed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cocon")
    path = tmp_path / "state" / "last.pt"
    model, optimizer, scheduler = _training(0)
    # after epoch 3, no step of epoch 4 run, by the one process of the run
    checkpoints.save_training_state(path, "abc", 3, 0, model, optimizer, scheduler, [{"epoch": 3}],
                                    Runtime(0, 1, torch.device("cpu")), best={"epoch": 2})
    fresh = _training(1)
    assert checkpoints.resume_training(path, "abc", *fresh)["epoch"] == 3, "an unfinished state resumes"
    assert torch.equal(fresh[0].weight, model.weight)

    checkpoints.mark_finished(path)
    marked = checkpoints.load(path)
    assert marked["finished"] is True
    assert (marked["epoch"], marked["history"], marked["best"]) == (3, [{"epoch": 3}], {"epoch": 2})
    assert torch.equal(marked["model"]["weight"], model.weight)
    caplog.clear()
    fresh = _training(1)
    assert checkpoints.resume_training(path, "abc", *fresh) is None
    assert f"starting over: {path} belongs to a finished run" in caplog.text
    assert not torch.equal(fresh[0].weight, model.weight), "nothing was loaded"


def test_marking_a_missing_state_does_nothing(tmp_path):
    checkpoints.mark_finished(tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists()


def test_a_run_from_scratch_clears_the_records_of_the_earlier_run(tmp_path):
    for name in ("metrics.csv", "best.pt", "last.pt", "job.json", "tensorboard/events.out.tfevents.1"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    checkpoints.clear_records(tmp_path)
    # last.pt stays until the new run's first epoch replaces it; job.json is the new run's
    assert sorted(path.name for path in tmp_path.iterdir()) == ["job.json", "last.pt"]
    checkpoints.clear_records(tmp_path / "absent")
