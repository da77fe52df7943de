"""Training on CPU: the loss falls, checkpoints hold everything, a run resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY, tiny_config
from trainer.config import train_config_from_dict
from trainer.errors import CheckpointError, TrainerError
from trainer.train import load_checkpoint, lr_at, resolve_device, train

TINY_MIN_LR = TINY["min_lr"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_well_below_its_start(trained_run: Path) -> None:
    records = metrics(trained_run)
    assert [r["step"] for r in records] == list(range(1, 31))
    start = sum(r["loss"] for r in records[:3]) / 3
    end = sum(r["loss"] for r in records[-3:]) / 3
    assert end < 0.6 * start, (start, end)
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in records)
    # programs never trained on: the model learned something general about execution
    heldout = [r["heldout_loss"] for r in records if "heldout_loss" in r]
    assert len(heldout) == 3 and heldout[-1] < heldout[0]


def test_checkpoint_holds_model_optimizer_step_config_and_tokenizer(trained_run: Path) -> None:
    state = load_checkpoint(trained_run)
    assert state["step"] == 30
    assert state["optimizer"]["state"]  # AdamW moments, so a resume really continues
    assert train_config_from_dict(state["config"]) == train_config_from_dict(
        json.loads((trained_run / "config.json").read_text())
    )
    assert "<|frame_sep|>" in state["tokenizer"]
    assert (trained_run / "tokenizer.json").is_file()


def test_resume_continues_the_step_count(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = load_checkpoint(run)
    with (run / "metrics.jsonl").open("a") as f:  # as if the run had died after step 30
        f.write(json.dumps({"step": 31, "loss": 9.9}) + "\n")
    result = train([harvested], run, tiny_config(steps=33), device="cpu")
    assert result.step == 33
    assert [r["step"] for r in metrics(run)] == list(range(1, 34))  # step 31 once, the new one
    assert metrics(run)[30]["loss"] != 9.9
    after = load_checkpoint(run)
    assert after["step"] == 33
    assert after["tokenizer"] == before["tokenizer"]
    changed = [not torch.equal(before["model"][k], after["model"][k]) for k in before["model"]]
    assert any(changed)


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = tiny_config(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(5.5e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    short = tiny_config(steps=30, warmup_steps=100, lr=1e-3, min_lr=1e-4)  # warm-up longer than the run
    assert lr_at(14, short) == pytest.approx(1e-3)  # it takes half the run
    assert lr_at(29, short) < 1.1e-4 and lr_at(40, short) == pytest.approx(1e-4)  # decayed, and stays there


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    for content in (b"not a checkpoint", b"garbage\n"):
        (tmp_path / "checkpoint.pt").write_bytes(content)
        with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
            load_checkpoint(tmp_path)
        assert "weights_only" not in str(info.value)  # not torch's advice to unpickle it unsafely
    if not torch.cuda.is_available():
        with pytest.raises(TrainerError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(TrainerError, match="no CUDA device"):
            train([tmp_path], tmp_path / "run", tiny_config(steps=1), device="cuda")
        assert not (tmp_path / "run").exists()  # no empty run folder for a later `eval` to trip on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda_in_bf16(harvested: Path, tmp_path: Path) -> None:
    result = train([harvested], tmp_path, tiny_config(steps=20), device="cuda")
    records = metrics(tmp_path)
    assert result.step == 20 and records[-1]["device"] == "cuda"
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow
def test_two_ranks_under_torchrun_train_one_model(harvested: Path, tmp_path: Path) -> None:
    """The real multi-process path: torchrun, gloo on CPU, each rank reading its share."""
    exe = Path(sys.executable).parent / "worldtrace"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e .)")
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(exe), "train", str(harvested), "--out", str(out), "--steps", "3", "--device", "cpu",
        "--seq-len", "256", "--batch-size", "2", "--layers", "1", "--heads", "2",
        "--d-model", "32", "--vocab-size", "300", "--workers", "0", "--log-every", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    records = metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["world_size"] == 2 and r["tokens"] == 2 * 2 * 256 for r in records)
    assert load_checkpoint(out)["step"] == 3
    assert done.stdout.count('"checkpoint"') == 1  # only rank 0 reports


def test_a_tokenizer_file_is_used_as_given(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    given = trained_run / "tokenizer.json"
    train([harvested], tmp_path, tiny_config(steps=1), device="cpu", tokenizer_file=given)
    assert load_checkpoint(tmp_path)["tokenizer"] == load_checkpoint(trained_run)["tokenizer"]


def test_workers_run_when_tokenizers_parallelism_is_forced_on(harvested: Path, tmp_path: Path) -> None:
    """TOKENIZERS_PARALLELISM=true (common in Hugging Face set-ups) used to hang the first batch of
    every DataLoader worker: the BPE thread pool that fitted the tokenizer does not survive fork."""
    code = (
        "import sys; from pathlib import Path; from tests.trainer.conftest import TINY, tiny_config; "
        "from trainer.train import train; "
        "train([Path(sys.argv[1])], Path(sys.argv[2]), tiny_config(steps=2, num_workers=1), device='cpu')"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(harvested), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, env=env, cwd=repo,
    )
    assert done.returncode == 0, done.stderr
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2]


def test_workers_default_to_what_the_device_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.train import default_workers

    assert default_workers(torch.device("cpu")) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers(torch.device("cuda")) == 8
    assert default_workers(torch.device("cuda"), world_size=4) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers(torch.device("cuda")) == 1


def test_workers_option_takes_auto_or_a_count(harvested: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from harvest.cli import cli

    common = ["train", str(harvested), "--steps", "1", "--device", "cpu", "--seq-len", "256",
              "--layers", "1", "--heads", "2", "--d-model", "16", "--vocab-size", "300", "-s"]
    bad = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "bad"), "--workers", "many"])
    assert bad.exit_code == 2 and "'many' is neither 'auto' nor a count" in bad.output
    done = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "auto")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["num_workers"] is None


def test_no_training_rows_is_an_error_before_any_step(harvested: Path, tmp_path: Path) -> None:
    cfg = tiny_config(steps=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, statuses=("timeout",)))
    with pytest.raises(TrainerError, match="no training rows"):
        train([harvested], tmp_path, cfg, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no tokenizer or config of a run that never ran


def test_a_resume_takes_its_run_time_settings_from_the_command(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    changed = tiny_config(steps=34, log_every=2, ckpt_every=100, num_workers=0)
    changed = dataclasses.replace(changed, model=dataclasses.replace(changed.model, n_layer=3))
    train([harvested], run, changed, device="cpu")
    saved = json.loads((run / "config.json").read_text())
    assert (saved["steps"], saved["log_every"], saved["ckpt_every"]) == (34, 2, 100)
    assert saved["model"]["n_layer"] == tiny_config().model.n_layer  # the model stays the saved one
    assert [r["step"] for r in metrics(run)][30:] == [32, 34]


def test_a_resume_with_more_steps_goes_on_at_the_decayed_learning_rate(
    trained_run: Path, harvested: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert metrics(run)[29]["lr"] > TINY_MIN_LR  # step 30 was the last one of the decay
    train([harvested], run, tiny_config(steps=33), device="cpu")
    assert [r["lr"] for r in metrics(run)[30:]] == [pytest.approx(TINY_MIN_LR)] * 3
    assert json.loads((run / "config.json").read_text())["decay_steps"] == 30
    assert train_config_from_dict(load_checkpoint(run)["config"]).decay_steps == 30


def test_a_checkpoint_without_decay_steps_keeps_its_schedule(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    del state["config"]["decay_steps"]  # as the trainer saved it before the setting existed
    torch.save(state, run / "checkpoint.pt")
    train([harvested], run, tiny_config(steps=32), device="cpu")
    assert [r["lr"] for r in metrics(run)[30:]] == [pytest.approx(TINY_MIN_LR)] * 2


def test_a_resume_given_decay_steps_stretches_the_schedule(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = tiny_config(steps=32, decay_steps=60)
    train([harvested], run, cfg, device="cpu")
    assert [r["lr"] for r in metrics(run)[30:]] == [pytest.approx(lr_at(30, cfg)), pytest.approx(lr_at(31, cfg))]
    assert metrics(run)[30]["lr"] > 2 * TINY_MIN_LR


def test_steps_below_the_checkpoint_is_an_error(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = (run / "config.json").read_text()
    with pytest.raises(TrainerError, match="at step 30, past --steps 20"):
        train([harvested], run, tiny_config(steps=20, log_every=5), device="cpu")
    assert (run / "config.json").read_text() == config
    assert len(metrics(run)) == 30


def test_a_half_written_metrics_line_does_not_stop_a_resume(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "loss": 1.2')  # killed while writing
    train([harvested], run, tiny_config(steps=31), device="cpu")
    assert [r["step"] for r in metrics(run)] == list(range(1, 32))


def test_no_resume_removes_the_old_checkpoint_first(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    cfg = tiny_config(steps=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, statuses=("timeout",)))
    with pytest.raises(TrainerError, match="no training rows"):  # the new run fails early
        train([harvested], run, cfg, device="cpu", resume=False)
    assert sorted(p.name for p in run.iterdir()) == []  # nothing of the old run, nothing of the failed one


def test_a_checkpoint_that_does_not_fit_this_trainer_is_a_clear_error(trained_run: Path, tmp_path: Path) -> None:
    from trainer.train import model_from_checkpoint

    state = load_checkpoint(trained_run)
    newer = {**state, "config": {**state["config"], "label_smoothing": 0.1}}
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="configuration is not one this trainer reads"):
        load_checkpoint(tmp_path / "newer.pt")
    wider = {**state, "config": {**state["config"], "model": {**state["config"]["model"], "d_model": 128}}}
    with pytest.raises(CheckpointError, match="weights do not fit its model configuration"):
        model_from_checkpoint(wider, torch.device("cpu"))
