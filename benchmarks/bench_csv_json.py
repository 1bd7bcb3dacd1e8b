"""Time the CSV and JSON-lines readers on generated 1M-row logs and print rows/s (a benchmark, not a test)."""

from __future__ import annotations

import pathlib
import tempfile
import time

import numpy as np
import pandas as pd

from lrdiag.ingest import csvlog, jsonlog

ROWS = 1_000_000


def write_lightning_csv(path: pathlib.Path, rows: int) -> None:
    """Sparse Lightning CSVLogger rows: a train loss every row, the LR every 50th, a val loss every 1000th."""
    steps = np.arange(rows)
    frame = pd.DataFrame({
        "epoch": steps // 1000,
        "step": steps,
        "train_loss_step": np.exp(-steps / rows) + np.random.default_rng(0).random(rows) * 0.1,
        "lr-AdamW": np.where(steps % 50 == 0, 1e-3, np.nan),
        "val_loss": np.where(steps % 1000 == 999, 0.5, np.nan),
    })
    frame.to_csv(path, index=False)


def write_detectron2_json(path: pathlib.Path, rows: int) -> None:
    """detectron2 metrics.json lines (sorted keys, full float precision), an evaluation line every 5000."""
    rng = np.random.default_rng(0)
    loss = rng.random((rows, 3))
    with path.open("w") as out:
        for iteration in range(rows):
            box, cls, total = loss[iteration].tolist()
            out.write(f'{{"data_time": 0.0042, "eta_seconds": {rows - iteration}.5, "iteration": {iteration}, '
                      f'"loss_box_reg": {box!r}, "loss_cls": {cls!r}, "lr": 0.02, "time": 0.31, "total_loss": {total!r}}}\n')
            if iteration % 5000 == 4999:
                out.write(f'{{"bbox/AP": 30.5, "bbox/AP50": 50.1, "bbox/AP75": 31.2, "bbox/APl": 40.0, '
                          f'"bbox/APm": 33.3, "bbox/APs": 12.1, "iteration": {iteration}}}\n')


def bench(reader, path: pathlib.Path, rows: int) -> None:
    start = time.perf_counter()
    result = reader.read(path)
    seconds = time.perf_counter() - start
    assert not result.problems, result.problems
    print(f"{result.source:>16}: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
          f"({path.stat().st_size / seconds / 1e6:.0f} MB/s)")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv_path = pathlib.Path(folder, "metrics.csv")
        json_path = pathlib.Path(folder, "metrics.json")
        write_lightning_csv(csv_path, ROWS)
        write_detectron2_json(json_path, ROWS)
        bench(csvlog, csv_path, ROWS)
        bench(jsonlog, json_path, ROWS)


if __name__ == "__main__":
    main()
