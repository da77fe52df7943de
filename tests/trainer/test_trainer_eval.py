"""Held-out next-frame prediction: frame parsing, prompts, per-kind accuracies, the CLI."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harvest.cli import cli
from schemas.cwm import parse_cwm
from trainer.config import train_config_from_dict
from trainer.data import TraceDataset
from trainer.errors import TrainerError
from trainer.evaluate import RETURN_VALUE, KindScore, evaluate, parse_frame, prompts
from trainer.packing import cwm_texts
from trainer.tokenizer import TraceTokenizer
from trainer.train import load_checkpoint

SEP = 99


def test_parse_frame_agrees_with_the_schemas_parser(harvested: Path) -> None:
    text = next(cwm_texts(TraceDataset([harvested], split="all")))
    reference = parse_cwm(text).frames
    pieces = text.split("<|frame_sep|>")[1:-1]
    assert len(pieces) == len(reference)
    for piece, frame in zip(pieces, reference):
        parsed = parse_frame(piece + "<|frame_sep|>")
        assert (parsed.kind, parsed.line) == (frame.kind, frame.source_line)
        if frame.kind in ("return", "exception"):
            assert parsed.values == {RETURN_VALUE: frame.arg}
    assert parse_frame("garbage").kind is None
    assert parse_frame("<|line_sep|>{not json<|action_sep|>x = 1\n").values == {}


def test_a_value_that_does_not_parse_does_not_match_a_real_null() -> None:
    truth = parse_frame("<|return_sep|><|action_sep|>    return\n<|arg_sep|>null<|frame_sep|>")
    assert truth.values == {RETURN_VALUE: None}
    for garbage in ('"abc', "nullnull", ""):
        predicted = parse_frame(f"<|return_sep|><|action_sep|>    return\n<|arg_sep|>{garbage}<|frame_sep|>")
        score = KindScore()
        score.add(truth, predicted, exact=False)
        assert (score.values, score.values_ok, score.changed_ok) == (1, 0, 0), garbage
    score = KindScore()
    score.add(truth, truth, exact=True)
    assert score.values_ok == 1


def test_prompts_end_at_a_frame_boundary_and_fit() -> None:
    ids = [1, SEP] + [5, 5, SEP] * 10
    pairs = prompts(ids, SEP, seq_len=12, n_targets=3, max_new=4, rng=random.Random(0))
    assert len(pairs) == 3
    for prompt, target in pairs:
        assert prompt[:2] == [1, SEP] and prompt[-1] == SEP
        assert target == [5, 5, SEP]
        assert len(prompt) + len(target) <= 12


def test_eval_reports_accuracies_per_event_kind(trained_run: Path, harvested: Path) -> None:
    report = evaluate(trained_run, [harvested], device="cpu", max_traces=4, frames_per_trace=3,
                      max_new_tokens=24)
    assert report["split"] == "heldout" and report["traces"] == 4
    assert report["per_kind"] and set(report["per_kind"]) <= {"call", "line", "return", "exception"}
    assert sum(k["frames"] for k in report["per_kind"].values()) == report["overall"]["frames"]
    for scores in [report["overall"], *report["per_kind"].values()]:
        for name in ("kind_accuracy", "line_accuracy", "value_accuracy", "changed_value_accuracy",
                     "frame_exact"):
            assert scores[name] is None or 0.0 <= scores[name] <= 1.0
    # 30 steps are enough to learn what kind of frame comes next most of the time
    assert report["overall"]["kind_accuracy"] > 0.5


def test_traces_cwm_cannot_express_are_counted(trained_run: Path, tmp_path: Path, caplog) -> None:
    """A trace whose program holds a CWM special token cannot be CWM text: training and eval skip
    it, and say so (they were skipped silently, with a debug log line)."""
    from tests.trainer.conftest import write_shards
    from tracer.api import trace_call
    from trainer.train import fit_tokenizer

    traced = []
    for i, body in enumerate(["return 1", "return '<|frame_sep|>'", "return '<|line_sep|>'"]):
        source = f"def f():\n    {body}\n"
        path = tmp_path / f"p{i}.py"
        path.write_text(source, encoding="utf-8")
        traced.append((trace_call(str(path), "f", "", source=source, program_id=f"p{i}"), source))
    shards = write_shards(traced, tmp_path / "shards", n_shards=1)
    report = evaluate(trained_run, shards, device="cpu", split="all", max_new_tokens=8)
    assert (report["traces"], report["traces_not_cwm"]) == (1, 2)
    cfg = train_config_from_dict(load_checkpoint(trained_run)["config"])
    with caplog.at_level("WARNING", logger="trainer.train"):
        fit_tokenizer(shards, replace(cfg, data=replace(cfg.data, heldout_fraction=0.0)))
    assert "2 trace(s) of the tokenizer's sample cannot be written as CWM text" in caplog.text
    assert "contains the CWM special token" in caplog.text


def test_eval_drops_the_traces_training_drops_for_a_long_context(trained_run: Path, harvested: Path,
                                                                  tmp_path: Path) -> None:
    state = load_checkpoint(trained_run)
    tokenizer = TraceTokenizer.from_str(state["tokenizer"])
    cfg = train_config_from_dict(state["config"])
    sep = tokenizer.frame_sep_id
    contexts = sorted(
        tokenizer.encode(text).index(sep) + 1
        for text in cwm_texts(TraceDataset([harvested], cfg.data, split="heldout"))
    )
    cut = contexts[len(contexts) // 2]  # about half of the held-out traces have a longer context
    kept = sum(n <= cut for n in contexts)
    assert 0 < kept < len(contexts)
    state["config"]["data"]["max_context_share"] = (cut + 0.5) / (cfg.model.seq_len + 1)
    torch.save(state, tmp_path / "checkpoint.pt")
    report = evaluate(tmp_path / "checkpoint.pt", [harvested], device="cpu", max_traces=1000,
                      frames_per_trace=1, max_new_tokens=4)
    assert (report["traces"], report["traces_long_context"]) == (kept, len(contexts) - kept)


def test_eval_with_no_frame_to_score_names_the_split(trained_run: Path, harvested: Path, tmp_path: Path) -> None:
    # `--split all` said "no all frames to evaluate ... (held-out fraction 0.05, ...)"
    state = load_checkpoint(trained_run)
    state["config"]["data"]["max_context_share"] = 1e-6  # every trace's context is too long
    torch.save(state, tmp_path / "checkpoint.pt")
    for split, fraction in (("all", False), ("heldout", True)):
        with pytest.raises(TrainerError) as error:
            evaluate(tmp_path / "checkpoint.pt", [harvested], device="cpu", split=split, max_traces=3)
        message = str(error.value)
        assert message.startswith("no frames to evaluate in ") and f"(split {split}" in message, message
        assert ("held-out fraction" in message) == fraction, message


def test_cli_train_and_eval(harvested: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(cli, [
        "train", str(harvested), "--out", str(out), "--steps", "2", "--device", "cpu",
        "--seq-len", "256", "--batch-size", "2", "--layers", "1", "--heads", "2", "--d-model", "32",
        "--vocab-size", "300", "--workers", "0", "--log-every", "1", "--heldout-fraction", "0.25",
    ])
    assert result.exit_code == 0, result.output
    assert "step      2" in result.output and "resuming" not in result.output
    result = runner.invoke(cli, [
        "train", str(harvested), "--out", str(out), "--steps", "3", "--device", "cpu", "--workers", "0",
        "--log-every", "1",
    ])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"resuming from step 2 ({out / 'checkpoint.pt'})\n")
    assert "step      3" in result.output
    result = runner.invoke(cli, ["eval", str(out), str(harvested), "--device", "cpu",
                                 "--max-traces", "1", "--frames-per-trace", "1",
                                 "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["overall"]["frames"] == 1


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'nope'}: no such file or directory"
    ]
    result = runner.invoke(cli, ["eval", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 1 and "no checkpoint" in result.output


def test_cli_train_refuses_an_unknown_status_naming_it(harvested: Path, tmp_path: Path) -> None:
    """A typo in --status is an error before any work, not "no training rows" after a BPE fit."""
    for given, named in (("ok,excepion", "'excepion'"), (",", "no status")):
        result = CliRunner().invoke(cli, [
            "train", str(harvested), "--out", str(tmp_path / "o"), "--status", given,
            "--steps", "1", "--device", "cpu", "--workers", "0", "--seq-len", "128", "--batch-size", "2",
        ])
        assert result.exit_code == 2 and named in result.output and "ok, exception, timeout" in result.output
        assert not (tmp_path / "o").exists()


def test_help_has_examples() -> None:
    for name in ("train", "eval"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output


def test_greedy_with_kv_cache_equals_recomputing_the_window() -> None:
    """The KV cache changes the cost of decoding, not a single token: rows that stop early, rows
    of different lengths (left padding) and rows that outgrow seq_len (the window slides, and
    decoding falls back to re-encoding it) all decode exactly as without the cache."""
    import torch

    from trainer.config import ModelConfig
    from trainer.model import TraceLM

    torch.manual_seed(0)
    model = TraceLM(ModelConfig(vocab_size=300, d_model=64, n_layer=2, n_head=4, seq_len=96)).eval()
    with torch.no_grad():  # larger weights than a fresh model's, so that attention matters
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.3)
    gen = torch.Generator().manual_seed(1)
    batch = [torch.randint(0, 300, (n,), generator=gen).tolist() for n in (3, 20, 57, 88)]
    free = model.greedy(batch, stop_id=-1, max_new_tokens=30, use_cache=False)
    assert [len(out) for out in free] == [30] * 4  # nobody stops; the last row slides past 96
    assert all(len(set(out)) > 10 for out in free)  # not a degenerate repeat-the-last-token model
    assert model.greedy(batch, stop_id=-1, max_new_tokens=30, use_cache=True) == free
    # The shortest, then the longest row stops at the first token it has not produced before,
    # while the others run on (past seq_len, in the second case, once the longest has stopped).
    for row in (0, 3):
        first = next(j for j in range(1, 30) if free[row][j] not in free[row][:j])
        expected = model.greedy(batch, stop_id=free[row][first], max_new_tokens=30, use_cache=False)
        assert len(expected[row]) == first + 1 and max(len(out) for out in expected) > first + 1
        assert model.greedy(batch, stop_id=free[row][first], max_new_tokens=30, use_cache=True) == expected
