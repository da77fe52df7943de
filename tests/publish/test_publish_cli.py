"""`worldtrace publish` on bad input: one clear error line, non-zero exit, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from harvest.cli import cli
from harvest.commands.publish import ByteSize


def _error(args: list[str], **env: str) -> str:
    result = CliRunner().invoke(cli, args, env=env or None)
    assert result.exit_code != 0
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError | TypeError)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["publish", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--push" in result.output


def test_silent_prints_nothing(sample_shards: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(tmp_path / "ds"), "-s"])
    assert result.exit_code == 0 and result.output == ""
    assert (tmp_path / "ds" / "README.md").is_file()


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _error(["publish", str(tmp_path / "nope"), "--to", str(tmp_path / "o")])


def test_not_a_shard(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert "bad.parquet" in _error(["publish", str(bad), "--to", str(tmp_path / "o")])


def test_bad_split_names_and_fractions(sample_shards: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    assert "word characters" in _error(["publish", str(sample_shards), "--to", out, "--split", "tr-ain=1"])
    assert "sum to" in _error(["publish", str(sample_shards), "--to", out, "--split", "train=0.5,test=0.4"])
    for spec in ("train=0.5,all=0.5", "ALL=1", "all"):  # datasets' union of every split
        assert "reserves" in _error(["publish", str(sample_shards), "--to", out, "--split", spec])


def test_refuses_a_non_empty_output_folder(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):  # not a dataset: --overwrite would not help, so it is not suggested
        error = _error(["publish", str(sample_shards), "--to", str(out), *extra])
        assert "not empty" in error and "mine.txt" in error and "new or empty folder" in error, error
        assert "--overwrite" not in error
    assert (out / "mine.txt").read_text() == "keep me"


def test_a_published_dataset_is_replaced_only_with_overwrite(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out)]).exit_code == 0
    assert "use --overwrite" in _error(["publish", str(sample_shards), "--to", str(out)])


def test_overwrite_replaces_a_published_dataset(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    for extra in ([], ["--overwrite", "--status", "ok"]):
        result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out), "--split", "train", *extra])
        assert result.exit_code == 0, result.output
    assert "1 by status" in result.output


def test_push_without_a_token_fails_before_any_work(
    sample_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    out = tmp_path / "o"
    assert "HF_TOKEN" in _error(["publish", str(sample_shards), "--to", str(out), "--push", "me/traces"])
    assert not out.exists()


def test_refuses_an_output_folder_inside_the_input(sample_shards: Path, tmp_path: Path) -> None:
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(sample_shards, shards)
    assert "inside" in _error(["publish", str(shards), "--to", str(shards / "ds")])
    assert not (shards / "ds").exists()


def test_an_unknown_status_is_refused_with_the_valid_ones(sample_shards: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(tmp_path / "o"), "--status", "okk"])
    assert result.exit_code == 2
    assert "'okk' is not one of 'ok', 'exception', 'timeout', 'memory', 'crashed', 'error'" in result.output
    assert not (tmp_path / "o").exists()


def test_a_failed_publish_leaves_nothing_behind(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert "no traces left" in _error(["publish", str(sample_shards), "--to", str(out), "--max-events", "0"])
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty, and the next publish is not refused
    assert "no traces left" in _error(["publish", str(sample_shards), "--to", str(out), "--max-events", "0"])
    assert out.is_dir() and list(out.iterdir()) == []
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out), "--split", "train"])
    assert result.exit_code == 0, result.output


def test_publishing_the_same_input_twice_gives_the_same_bytes(sample_shards: Path, tmp_path: Path) -> None:
    import json
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(sample_shards, shards)
    run = json.loads((shards / "harvest-run.json").read_text())
    (shards / "harvest-run.json").write_text(json.dumps({**run, "finished_at": "2026-01-02T03:04:05+00:00"}))
    sums = []
    for name in ("o1", "o2"):
        result = CliRunner().invoke(cli, ["publish", str(shards), "--to", str(tmp_path / name), "--name", "me/traces"])
        assert result.exit_code == 0, result.output
        sums.append((tmp_path / name / "checksums.sha256").read_text())
    assert sums[0] == sums[1]  # croissant.json included: dated by the harvest, not the clock
    assert json.loads((tmp_path / "o1" / "croissant.json").read_text())["datePublished"].startswith("2026-01-02")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_overwrite_keeps_the_published_dataset(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out), "--split", "train"])
    assert result.exit_code == 0, result.output
    before = _tree(out)
    assert "no traces left" in _error(
        ["publish", str(sample_shards), "--to", str(out), "--overwrite", "--status", "memory"]
    )
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"], "temporary folders left behind"


def test_refuses_input_inside_the_output_folder(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out), "--split", "train"])
    assert result.exit_code == 0, result.output
    before = _tree(out)
    for shards in (out / "data", out / "data" / "*.parquet"):
        assert "inside --to" in _error(["publish", str(shards), "--to", str(out), "--overwrite"])
    assert _tree(out) == before


class _FakeHub:
    """HfApi stand-in: records upload_folder's arguments, or fails like an unreachable Hub."""

    calls: list[dict] = []
    error: Exception | None = None

    def __init__(self, token: str) -> None:
        pass

    def create_repo(self, repo_id: str, **kwargs: object) -> None:
        if _FakeHub.error is not None:
            raise _FakeHub.error

    def upload_folder(self, **kwargs: object) -> object:
        from types import SimpleNamespace

        _FakeHub.calls.append(kwargs)
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/1")


def test_push_without_a_network_is_one_error_line(
    sample_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    # the HTTP client huggingface_hub uses (httpx2 or httpx): its errors are HfHubHTTPError's base
    http_error = next(base for base in HfHubHTTPError.__mro__[1:] if base.__name__ == "HTTPError")
    client = importlib.import_module(http_error.__module__.split(".")[0])
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    monkeypatch.setattr(_FakeHub, "error", client.ConnectError("[Errno -2] Name or service not known"))
    result = CliRunner().invoke(
        cli, ["publish", str(sample_shards), "--to", str(tmp_path / "o"), "--push", "me/traces"], env={"HF_TOKEN": "hf_x"}
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert "upload to me/traces failed: cannot reach the Hub" in line and "Name or service not known" in line


def test_push_replaces_the_data_files_of_an_earlier_publish(
    sample_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fnmatch

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    monkeypatch.setattr(_FakeHub, "calls", [])
    result = CliRunner().invoke(
        cli, ["publish", str(sample_shards), "--to", str(tmp_path / "o"), "--push", "me/traces"], env={"HF_TOKEN": "hf_x"}
    )
    assert result.exit_code == 0, result.output
    (call,) = _FakeHub.calls
    stale = ["data/train-00001-of-00002.parquet", "data/validation-00000-of-00001.parquet", "provenance/run-old.json"]
    for name in stale:
        assert any(fnmatch.fnmatch(name, p) for p in call["delete_patterns"]), name
    assert not any(fnmatch.fnmatch(name, p) for p in call["delete_patterns"] for name in ("README.md", ".gitattributes"))


def test_the_same_input_elsewhere_gives_the_same_bytes_and_no_host_path(sample_shards: Path, tmp_path: Path) -> None:
    import json
    import shutil

    sums = []
    for where in (tmp_path / "a" / "shards", tmp_path / "b" / "deeper" / "shards"):
        shutil.copytree(sample_shards, where)
        out = where.parent / "ds"
        # The sample shards have no run manifest: without SOURCE_DATE_EPOCH the date would be the clock's.
        runner = CliRunner(env={"SOURCE_DATE_EPOCH": "1700000000"})
        result = runner.invoke(cli, ["publish", str(where), "--to", str(out), "--name", "me/traces"])
        assert result.exit_code == 0, result.output
        sums.append((out / "checksums.sha256").read_text())
        for file in out.rglob("*"):
            if file.is_file() and file.suffix != ".parquet":
                assert str(tmp_path) not in file.read_text(), file
    assert sums[0] == sums[1]
    inputs = json.loads((tmp_path / "a" / "ds" / "provenance" / "inputs.json").read_text())
    assert inputs["input"] == "shards"
    assert sorted(s["file"] for s in inputs["shards"]) == sorted(p.name for p in sample_shards.glob("*.parquet"))


def _reaped_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("phase", ["staging", "moving aside", "moving in"])
def test_a_killed_publish_is_undone_by_the_next(sample_shards: Path, tmp_path: Path, phase: str) -> None:
    """What a SIGKILLed publish leaves next to OUT (its staging folder, the old outputs it had moved
    aside) is cleaned up by the next publish into OUT, which finds OUT as it was before: here a
    publish that then fails, so OUT must hold the first dataset again, byte for byte."""
    import os

    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(out), "--split", "train"])
    assert result.exit_code == 0, result.output
    before = _tree(out)
    dead = _reaped_pid()
    staging = tmp_path / f".o.publishing-{dead}-abc"
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "half.parquet").write_bytes(b"half written")
    if phase != "staging":  # killed inside the swap: the old outputs (some or all) are aside
        aside = tmp_path / f".o.replaced-{dead}-def"
        aside.mkdir()
        names = sorted(p.name for p in out.iterdir())
        for name in names if phase == "moving in" else names[:2]:
            os.replace(out / name, aside / name)
        if phase == "moving in":
            (aside / ".all-aside").touch()
            os.replace(staging / "data", out / "data")  # the first new output had moved in
    alive = tmp_path / f".o.publishing-{os.getpid()}-ghi"  # a publish still running: not touched
    alive.mkdir()
    assert "no traces left" in _error(
        ["publish", str(sample_shards), "--to", str(out), "--overwrite", "--status", "memory"]
    )
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "o"]


def test_a_dataset_mixing_tracer_versions_is_flagged(sample_shards: Path, tmp_path: Path) -> None:
    # Shards of two tracer versions (a glob over two harvests' folders): the card counts the
    # traces per version, and the command warns that the versions record programs differently.
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.shards import rebuild_manifest

    mixed = tmp_path / "mixed"
    shutil.copytree(sample_shards, mixed)
    first = sorted(mixed.glob("*.parquet"))[0]
    table = pq.read_table(first)
    older = pa.array(["0.0.1"] * table.num_rows).dictionary_encode().cast(table.schema.field("tracer_version").type)
    table = table.set_column(table.schema.get_field_index("tracer_version"), table.schema.field("tracer_version"), older)
    pq.write_table(table, first, compression="zstd")
    rebuild_manifest(mixed)
    result = CliRunner().invoke(cli, ["publish", str(mixed), "--to", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "warning: the dataset mixes the traces of 2 tracer versions (0.0.1: 3," in result.output
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| tracer version | traces |" in card and "| `0.0.1` | 3 |" in card


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500MB", 500 * 10**6), ("100M", 100 * 10**6), ("2gb", 2 * 10**9), ("1048576", 1048576), ("1B", 1),
     ("512MiB", 512 * 2**20), ("1GiB", 2**30), ("1.5 kib", 1536)],
)
def test_sizes_in_powers_of_1000_and_of_1024(text: str, expected: int) -> None:
    # GiB used to be read as GB: --shard-size 1GiB gave 10**9 bytes
    assert ByteSize().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["lots", "10XB", "GB", "", "1iB", "0MB"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a size"):
        ByteSize().convert(text, None, None)
