"""Writing one split as Hugging Face-style Parquet files, bounded in bytes per file and per row group."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_SHARD_BYTES = 500 * 1000**2
DEFAULT_ROW_GROUP_BYTES = 100 * 1000**2
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    rows: int
    bytes: int
    arrow_bytes: int


class SplitWriter:
    """Rows of one split into `data/{split}-{i:05d}-of-{n:05d}.parquet`.

    Row groups are cut once the buffered rows reach `row_group_bytes` in memory (Arrow size; the
    last incoming batch can take them past it); a new file starts once a file reaches
    `shard_bytes` on disk (so a file can exceed it by its last row group). Both are targets. Files are written under hidden temporary names and renamed by finish(), when the
    total `n` is known.
    """

    def __init__(
        self, data_dir: Path, split: str, schema: pa.Schema, *, shard_bytes: int, row_group_bytes: int
    ) -> None:
        self.data_dir = data_dir
        self.split = split
        self.schema = schema
        self.shard_bytes = shard_bytes
        self.row_group_bytes = row_group_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._arrow_bytes = 0
        self._temps: list[tuple[Path, int, int]] = []  # path, rows, arrow bytes
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            temp = self.data_dir / f".{self.split}-{len(self._temps):05d}.parquet.tmp"
            self._sink = pa.OSFile(str(temp), "wb")
            self._writer = pq.ParquetWriter(
                self._sink,
                self.schema,
                compression=COMPRESSION,
                compression_level=COMPRESSION_LEVEL,
                write_statistics=True,
                write_page_checksum=True,
            )
            self._temps.append((temp, 0, 0))
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows += table.num_rows
        self._arrow_bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        assert self._sink is not None
        if self._sink.tell() >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        assert self._sink is not None
        self._sink.close()
        path, _, _ = self._temps[-1]
        self._temps[-1] = (path, self._rows, self._arrow_bytes)
        self._writer, self._sink, self._rows, self._arrow_bytes = None, None, 0, 0

    def finish(self) -> list[WrittenFile]:
        """Close the last file and rename every file to its final `{split}-{i}-of-{n}` name."""
        self._flush()
        self._close_file()
        total = len(self._temps)
        files = []
        for number, (temp, rows, arrow_bytes) in enumerate(self._temps):
            final = self.data_dir / f"{self.split}-{number:05d}-of-{total:05d}.parquet"
            os.replace(temp, final)
            files.append(WrittenFile(final, rows, final.stat().st_size, arrow_bytes))
        return files

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if self._sink is not None:
                self._sink.close()
        for temp, _, _ in self._temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
