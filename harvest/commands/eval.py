"""`worldtrace eval`: held-out next-frame prediction accuracy of a trainer checkpoint."""

from __future__ import annotations

import json
from typing import Any

import click

from harvest.options import json_option

COLUMNS = (
    "frames", "kind_accuracy", "line_accuracy", "value_accuracy", "changed_value_accuracy",
    "frame_exact",
)
HEADERS = ("frames", "kind", "line", "values", "changed values", "exact frame")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("shards", nargs=-1, required=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto = CUDA when available.")
@click.option("--split", type=click.Choice(["heldout", "all", "train"]), default="heldout",
              show_default=True, help="Which programs to evaluate on (split by hash of program_id).")
@click.option("--max-traces", type=click.IntRange(1), default=200, show_default=True)
@click.option("--frames-per-trace", type=click.IntRange(1), default=4, show_default=True,
              help="Target frames picked per trace (seeded).")
@click.option("--max-new-tokens", type=click.IntRange(1), default=256, show_default=True,
              help="Decoding budget per frame (also at most twice the batch's longest true frame, plus 8).")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def command(checkpoint: str, shards: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Greedy-decode the next frame after trace prefixes of held-out programs in SHARDS and
    compare it with the real frame: accuracy of the event kind, the source line and each
    variable's value (all values, and only those the real frame writes out rather than ".."),
    and of the whole frame, overall and per event kind. CHECKPOINT is a run directory or its
    checkpoint.pt.

    \b
    Example:
        worldtrace eval runs/tiny harvest-out
        worldtrace eval runs/tiny/checkpoint.pt 'data/*.parquet' --max-traces 500 --json
    """
    from schemas.errors import SchemaError
    from trainer.errors import TrainerError
    from trainer.evaluate import evaluate

    try:
        report = evaluate(checkpoint, shards, **options)
    except (TrainerError, SchemaError) as e:
        raise click.ClickException(" ".join(str(e).split())) from e
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    reasons = [
        f"{n} more dropped, as in training: {why}"
        for n, why in ((report["traces_long_context"], "context too long"),
                       (report["traces_not_cwm"], "not expressible as CWM text"))
        if n
    ]
    note = f" ({'; '.join(reasons)})" if reasons else ""
    noun = "trace" if report["traces"] == 1 else "traces"
    click.echo(f"{report['traces']} {report['split']} {noun}{note}, checkpoint {report['checkpoint']}")
    rows = [("overall", report["overall"])] + list(report["per_kind"].items())
    click.echo(f"{'event kind':<10}" + "".join(f"{h:>15}" for h in HEADERS))
    for name, scores in rows:
        cells = "".join(f"{_cell(scores[c]):>15}" for c in COLUMNS)
        click.echo(f"{name:<10}{cells}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"
