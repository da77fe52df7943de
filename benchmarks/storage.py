"""Storage benchmark on the CRUXEval traces: bytes per event of our Parquet shards against JSON Lines
+ zstd at the same level, and write throughput against the tracer's event rate (one core).

    .venv/bin/python benchmarks/storage.py [--levels 1,3,9,19] [--repeat 1] [--corpus PATH]

Both formats store the same rows (the tracer's stream objects plus source, image and trace_id).
Targets: Parquet no larger than JSONL+zstd; writing faster than the tracer produces events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from schemas.convert import stream_to_batches  # noqa: E402
from schemas.ids import trace_id  # noqa: E402
from schemas.shards import DEFAULT_COMPRESSION_LEVEL, write_shard  # noqa: E402

IMAGE = "base-py311"


def corpus_path(given: str | None) -> Path:
    if given:
        return Path(given)
    root = Path(os.environ.get("WORLDTRACE_CORPORA", REPO.parent / "shared" / "corpora"))
    return root / "cruxeval.jsonl"


def trace_corpus(path: Path, folder: Path) -> tuple[list[str], dict[str, str], int, float]:
    """Stream lines, sources by program id, total events and the tracer's wall time."""
    from tracer.api import trace_call

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines, sources, events, seconds = [], {}, 0, 0.0
    for row in rows:
        file = folder / f"{row['id']}.py"
        file.write_text(row["code"], encoding="utf-8")
        start = time.perf_counter()
        trace = trace_call(str(file), "f", row["input"], program_id=row["id"])
        seconds += time.perf_counter() - start
        events += trace["n_events"]
        lines.append(json.dumps(trace))
        sources[row["id"]] = row["code"]
    return lines, sources, events, seconds


def replicate(lines: list[str], sources: dict[str, str], repeat: int) -> tuple[list[str], dict[str, str]]:
    if repeat == 1:
        return lines, sources
    out, out_sources = [], {}
    for k in range(repeat):
        for line in lines:
            obj = json.loads(line)
            pid = obj["program_id"]
            obj["program_id"] = f"{pid}-{k}"
            out.append(json.dumps(obj))
            out_sources[obj["program_id"]] = sources[pid]
    return out, out_sources


def jsonl_rows(lines: list[str], sources: dict[str, str]) -> bytes:
    """The same rows as our shards hold (stream object + trace_id, source, image) as JSON Lines."""
    rows = []
    for line in lines:
        obj = json.loads(line)
        src = sources[obj["program_id"]]
        tid = trace_id(obj["program_id"], src, obj["entrypoint"], obj["input"], IMAGE,
                       obj["backend"], obj["tracer_version"])
        rows.append(json.dumps({"trace_id": tid, "source": src, "image": IMAGE, **obj}))
    return ("\n".join(rows) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default=f"1,3,{DEFAULT_COMPRESSION_LEVEL},19",
                        help="zstd levels to compare, both formats at each (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="replicate the corpus N times (distinct ids)")
    parser.add_argument("--corpus", help="CRUXEval JSONL (default: $WORLDTRACE_CORPORA/cruxeval.jsonl)")
    args = parser.parse_args()
    path = corpus_path(args.corpus)
    if not path.is_file():
        sys.exit(f"corpus {path} not found (set WORLDTRACE_CORPORA or pass --corpus)")
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "programs").mkdir()
        lines, sources, tracer_events, tracer_s = trace_corpus(path, folder / "programs")
        lines, sources = replicate(lines, sources, args.repeat)
        n_events = tracer_events * args.repeat
        tracer_rate = tracer_events / tracer_s
        raw = jsonl_rows(lines, sources)
        print(f"corpus: {path} x{args.repeat}: {len(lines)} traces, {n_events} events "
              f"(uncompressed JSONL: {len(raw) / n_events:.1f} bytes/event)")
        print(f"tracer (in-process trace_call, one core): {tracer_rate:,.0f} events/s")
        print("level | parquet B/event | jsonl+zstd B/event | size ratio | shard write events/s | write/tracer")
        for level in levels:
            # Our shards: stream lines -> Arrow -> Parquet, JSON parsing included; best of 3.
            best = float("inf")
            for attempt in range(3):
                shard = folder / f"traces-{level}-{attempt}.parquet"
                start = time.perf_counter()
                info = write_shard(shard, stream_to_batches(lines, context=lambda o: {
                    "source": sources[o["program_id"]], "image": IMAGE}), compression_level=level)
                best = min(best, time.perf_counter() - start)
            jsonl_bytes = len(zstandard.ZstdCompressor(level=level).compress(raw))
            write_rate = n_events / best
            mark = "*" if level == DEFAULT_COMPRESSION_LEVEL else " "
            print(f"{level:>4}{mark} | {info.bytes / n_events:15.2f} | {jsonl_bytes / n_events:18.2f} | "
                  f"{info.bytes / jsonl_bytes:10.3f} | {write_rate:20,.0f} | {write_rate / tracer_rate:12.1f}")
        print("* = ShardWriter's default level. Targets: size ratio <= 1, write/tracer > 1.")


if __name__ == "__main__":
    main()
