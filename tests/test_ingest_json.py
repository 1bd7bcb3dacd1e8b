"""The JSON reader: HF trainer_state, detectron2 / mmdetection / mmengine JSON lines, Keras history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrdiag.ingest import jsonlog
from lrdiag.ingest.textlog import is_bookkeeping

REAL_LOGS = Path(__file__).parents[2] / "shared" / "real_logs"


def claims(path: Path) -> bool:
    return jsonlog.claims(path, path.read_bytes()[:65536])


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def json_lines(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def wheres(result) -> list[str]:
    return [problem.where for problem in result.problems]


def real(relative: str) -> Path:
    if not REAL_LOGS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    return REAL_LOGS / relative


# ---- real logs ---------------------------------------------------------------------------------

REAL_JSON = {
    "detectron2_mmdet/Medical_Waste_Detection_Detectron2/metrics.json": "detectron2_json",
    "detectron2_mmdet/NYU-Semi-Supervise-Object-Detection/metrics.json": "detectron2_json",
    "detectron2_mmdet/detectron2_training/metrics.json": "detectron2_json",
    "detectron2_mmdet/detection-winycg/20210812_190636.log.json": "mmdet_json",
    "detectron2_mmdet/mmdetection-zhaoyang97__faster_rcnn_r50_fpn_2x_coco_none/20211204_122329.log.json": "mmdet_json",
    "detectron2_mmdet/mmdetection-zhaoyang97__faster_rcnn_r50_fpn_4x_tct/20211207_091035.log.json": "mmdet_json",
    "detectron2_mmdet/mmdetection-zhaoyang97__yolo_swx/20210302_092255.log.json": "mmdet_json",
    "trainer_state/Checkpoint-of-CPT/trainer_state.json": "hf_trainer_state",
    "trainer_state/bashkir-language-audio2text/trainer_state.json": "hf_trainer_state",
    "trainer_state/canine-model/trainer_state.json": "hf_trainer_state",
    "trainer_state/mT5-based-azerbaijani-news-summarize/trainer_state.json": "hf_trainer_state",
    "trainer_state/mti881-projet2__ResultsEtape1_lr2e-4/trainer_state.json": "hf_trainer_state",
    "trainer_state/t5-summarization-demo/trainer_state.json": "hf_trainer_state",
    "trainer_state/whisper-large-v2-japanese-5k-steps/trainer_state.json": "hf_trainer_state",
    "trainer_state/whisper-tiny-nbaiLab/trainer_state.json": "hf_trainer_state",
}

# (loss tag, its points, eval tag, its points) as counted in the raw log_history
REAL_TRAINER_STATE = {
    "Checkpoint-of-CPT": ("loss", 10, "eval_loss", 10),
    "bashkir-language-audio2text": ("loss", 400, "eval_wer", 20),
    "canine-model": ("loss", 8, "eval_loss", 4),
    "mT5-based-azerbaijani-news-summarize": ("loss", 700, "eval_rougeLsum", 70),
    "mti881-projet2__ResultsEtape1_lr2e-4": ("loss", 29, "eval_overall_f1", 10),
    "t5-summarization-demo": ("grad_norm", 430, None, 0),
    "whisper-large-v2-japanese-5k-steps": ("learning_rate", 200, "eval_wer", 5),
    "whisper-tiny-nbaiLab": ("loss", 2000, "eval_loss", 100),
}


# .json files that are no JSON logs: they lie inside a tracker's store (a W&B run's files/ folder holds
# its summary and metadata), which the store's reader claims whole and reads from the run's own file.
_WANDB_RUNS = {
    "wandb/0Chris5R__StanfordCS336-Own-Transformer/wandb/run-20260118_202024-tv0vb44e": "run-tv0vb44e.wandb",
    "wandb/ARM-software__keyword-transformer/wandb/run-20220429_201936-3ojed7lz": "run-3ojed7lz.wandb",
    "wandb/A-Ijishakin__beta-tcvae/wandb/run-20240515_162319-ufljc7ut": "run-ufljc7ut.wandb",
    "wandb/A-Ijishakin__beta-tcvae/wandb/run-20240515_162424-n748obmj": "run-n748obmj.wandb",
}
REAL_STORE_JSON = {f"{run}/files/{name}": ("wandb", f"{run}/{file}")
                   for run, file in _WANDB_RUNS.items() for name in ("wandb-metadata.json", "wandb-summary.json")}


def test_every_real_json_log_is_listed_here():
    if not REAL_LOGS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    found = {str(path.relative_to(REAL_LOGS)) for path in REAL_LOGS.rglob("*.json")}
    assert found == set(REAL_JSON) | set(REAL_STORE_JSON)


@pytest.mark.parametrize("relative", sorted(REAL_STORE_JSON))
def test_real_json_files_of_stores_are_read_by_their_store_not_as_logs(relative):
    from lrdiag.ingest.discover import find_runs

    store, run_file = REAL_STORE_JSON[relative]
    repository = real("/".join(relative.split("/")[:2]))  # e.g. wandb/<owner>__<repo>
    specs = find_runs([str(repository)])
    assert all(spec.store == store and not spec.files for spec in specs)  # nothing in it scanned as a log
    assert str(REAL_LOGS / run_file) in [spec.where for spec in specs]


@pytest.mark.parametrize("relative", sorted(REAL_JSON))
def test_real_json_log_is_claimed_and_read_without_problems(relative):
    path = real(relative)
    assert claims(path)
    result = jsonlog.read(path)
    assert result.problems == []
    assert result.source == REAL_JSON[relative]
    assert result.series
    for tag, series in result.series.items():
        assert not is_bookkeeping(tag.removeprefix("val/"))
        assert series.steps.dtype == np.int64 and series.values.dtype == np.float64 and len(series) > 0
        assert series.role is None


@pytest.mark.parametrize("run", sorted(REAL_TRAINER_STATE))
def test_real_trainer_state_counts_and_no_summary_row(run):
    result = jsonlog.read(real(f"trainer_state/{run}/trainer_state.json"))
    train_tag, train_points, eval_tag, eval_points = REAL_TRAINER_STATE[run]
    assert len(result.series[train_tag]) == train_points
    if eval_tag:
        assert len(result.series[eval_tag]) == eval_points
    assert not {"train_loss", "train_runtime", "total_flos", "epoch", "step", "eval_runtime"} & set(result.series)


def test_real_trainer_state_rows_without_step_take_the_previous_rows_step():
    result = jsonlog.read(real("trainer_state/Checkpoint-of-CPT/trainer_state.json"))
    # the predict_* rows have no "step"; each follows the eval row of the same epoch
    assert result.series["predict_loss"].steps.tolist() == result.series["eval_loss"].steps.tolist()
    assert result.series["predict_loss"].steps[0] == 549
    assert result.series["predict_loss"].values[0] == 0.6476863622665405


def test_real_trainer_state_last_point_values():
    result = jsonlog.read(real("trainer_state/whisper-tiny-nbaiLab/trainer_state.json"))
    assert result.series["loss"].steps[-1] == 100000 and result.series["loss"].values[-1] == 0.8333
    assert result.series["eval_loss"].values[-1] == 0.512780487537384


def test_real_detectron2_log_without_restarts_has_every_record():
    result = jsonlog.read(real("detectron2_mmdet/Medical_Waste_Detection_Detectron2/metrics.json"))
    assert result.notes == []
    total_loss = result.series["total_loss"]
    assert len(total_loss) == 200
    assert total_loss.steps[[0, -1]].tolist() == [19, 3999]
    assert total_loss.values[0] == 2.725107299629599


def test_real_detectron2_duplicate_first_iteration_is_replaced_by_the_later_line():
    result = jsonlog.read(real("detectron2_mmdet/detectron2_training/metrics.json"))
    assert len(result.notes) == 1 and "line 2" in result.notes[0]
    total_loss = result.series["total_loss"]
    assert len(total_loss) == 15
    assert total_loss.steps.tolist() == list(range(19, 300, 20))
    second_line = json.loads(real("detectron2_mmdet/detectron2_training/metrics.json").read_text().splitlines()[1])
    assert total_loss.values[0] == second_line["total_loss"]


def reference_after_restarts(path: Path, step_of) -> dict[str, list[tuple[int, float]]]:
    """An independent, slow model of the rule: a record that goes back to step k (or repeats the
    previous record's step with a shared key) drops every earlier point at step >= k."""
    kept: list[tuple[int, dict]] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        step = step_of(record)
        metrics = {key: value for key, value in record.items()
                   if isinstance(value, (int, float)) and not is_bookkeeping(key)}
        if step is None or not metrics:
            continue
        if kept and (step < kept[-1][0] or (step == kept[-1][0] and metrics.keys() & kept[-1][1].keys())):
            kept = [(earlier, values) for earlier, values in kept if earlier < step]
        kept.append((step, metrics))
    series: dict[str, list] = {}
    for step, metrics in kept:
        for key, value in metrics.items():
            series.setdefault(key, []).append((step, value))
    return series


def test_real_detectron2_resumed_runs_keep_only_the_latest_data_with_a_note_per_restart():
    path = real("detectron2_mmdet/NYU-Semi-Supervise-Object-Detection/metrics.json")
    result = jsonlog.read(path)
    assert len(result.notes) == 9
    assert any(note.startswith("restart at line 2132: iteration 19 after 41999;") for note in result.notes)
    expected = reference_after_restarts(path, lambda record: record.get("iteration"))
    assert set(result.series) == set(expected)
    for tag, points in expected.items():
        assert result.series[tag].steps.tolist() == [step for step, _ in points]
        assert result.series[tag].values.tolist() == [value for _, value in points]
    assert np.all(np.diff(result.series["total_loss"].steps) > 0)
    assert len(result.series["bbox/AP"]) == 20  # evaluation lines share their iteration with a training line
    assert "bbox/AP-baby bed" in result.series  # keys with spaces, from the slow path


def test_real_mmdet_val_records_are_prefixed_and_steps_are_global():
    result = jsonlog.read(real("detectron2_mmdet/mmdetection-zhaoyang97__faster_rcnn_r50_fpn_4x_tct/20211207_091035.log.json"))
    assert result.notes == []
    assert len(result.series["loss"]) == 3600 and len(result.series["val/bbox_mAP"]) == 48
    assert {"val/lr", "lr-val", "memory", "mode", "epoch", "iter", "val/bbox_mAP_copypaste"}.isdisjoint(result.series)
    # 3750 iterations per epoch; the val record of epoch e sits at e * 3750
    assert result.series["val/bbox_mAP"].steps[:2].tolist() == [3750, 7500]
    assert result.series["loss"].steps[[0, -1]].tolist() == [50, 180000]
    assert np.all(np.diff(result.series["loss"].steps) > 0)


def test_real_mmdet_resumed_at_epoch_12_counts_from_the_epochs_before():
    result = jsonlog.read(real("detectron2_mmdet/mmdetection-zhaoyang97__faster_rcnn_r50_fpn_2x_coco_none/20211204_122329.log.json"))
    # the val record's iter (14659) is the epoch length; the last logged train iter is 14650
    assert result.series["loss"].steps[0] == 11 * 14659 + 50
    assert result.series["val/bbox_mAP"].steps[-1] == 24 * 14659
    assert result.series["val/bbox_mAP"].values[-1] == 0.111


def test_real_mmdet_aborted_run_has_one_point_per_metric():
    result = jsonlog.read(real("detectron2_mmdet/detection-winycg/20210812_190636.log.json"))
    assert {tag: series.steps.tolist() for tag, series in result.series.items()} == {
        tag: [50] for tag in ("lr", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "acc", "loss_bbox", "loss")}


# ---- generated logs: formats ------------------------------------------------------------------

def test_detectron2_round_trip_keeps_nan_and_infinity(tmp_path):
    path = write(tmp_path, "metrics.json", json_lines(
        {"data_time": 0.1, "iteration": 19, "lr": 0.01, "total_loss": 2.0},
        {"data_time": 0.1, "iteration": 39, "lr": 0.02, "total_loss": math.nan},
        {"data_time": 0.1, "iteration": 59, "lr": 0.02, "total_loss": math.inf},
    ))
    assert "NaN" in path.read_text()  # what json.dumps (and detectron2) writes
    result = jsonlog.read(path)
    assert result.source == "detectron2_json" and result.problems == [] and result.notes == []
    loss = result.series["total_loss"]
    assert loss.steps.tolist() == [19, 39, 59]
    assert loss.values[0] == 2.0 and math.isnan(loss.values[1]) and loss.values[2] == math.inf
    assert set(result.series) == {"lr", "total_loss"}


def test_detectron2_eval_line_sharing_the_iteration_is_not_a_repeat(tmp_path):
    path = write(tmp_path, "metrics.json", json_lines(
        {"iteration": 99, "total_loss": 1.0},
        {"bbox/AP": 10.0, "bbox/AP50": 20.0, "bbox/APs": 1.0, "iteration": 99},
        {"iteration": 119, "total_loss": 0.9},
    ))
    result = jsonlog.read(path)
    assert result.notes == []
    assert result.series["total_loss"].steps.tolist() == [99, 119]
    assert result.series["bbox/AP"].steps.tolist() == [99]


def test_detectron2_lines_wider_than_usual_are_read_even_first(tmp_path):
    wide = {"iteration": 0, **{f"bbox/AP-class{index}": float(index) for index in range(30)}}
    path = write(tmp_path, "metrics.json", json_lines(wide, *detectron2_records(5), dict(wide, iteration=99)))
    result = jsonlog.read(path)
    assert result.problems == [] and result.notes == []
    assert result.series["bbox/AP-class29"].steps.tolist() == [0, 99]
    assert result.series["total_loss"].steps.tolist() == [19, 39, 59, 79, 99]


def test_detectron2_restart_replaces_overlapping_steps_of_every_tag(tmp_path):
    path = write(tmp_path, "metrics.json", json_lines(
        {"iteration": 0, "total_loss": 3.0, "lr": 0.1},
        {"iteration": 100, "total_loss": 2.0, "lr": 0.1},
        {"iteration": 100, "bbox/AP": 5.0},
        {"iteration": 200, "total_loss": 1.0, "lr": 0.1},
        {"iteration": 100, "total_loss": 1.9, "lr": 0.2},  # resumed from the checkpoint at 100
        {"iteration": 200, "total_loss": 0.9, "lr": 0.2},
    ))
    result = jsonlog.read(path)
    assert result.series["total_loss"].steps.tolist() == [0, 100, 200]
    assert result.series["total_loss"].values.tolist() == [3.0, 1.9, 0.9]
    assert result.series["lr"].values.tolist() == [0.1, 0.2, 0.2]
    assert "bbox/AP" not in result.series  # its step 100 was replaced too
    assert result.notes == ["restart at line 5: iteration 100 after 200; 5 earlier points replaced"]


def test_mmdet_steps_count_iterations_across_epochs_and_val_keys_are_prefixed(tmp_path):
    path = write(tmp_path, "20240101_000000.log.json", json_lines(
        {"env_info": "sys.platform: linux", "config": "model = dict()", "seed": 0},
        {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.02, "memory": 3000, "time": 0.4, "loss": 1.5},
        {"mode": "train", "epoch": 1, "iter": 100, "lr": 0.02, "memory": 3000, "time": 0.4, "loss": 1.2},
        {"mode": "val", "epoch": 1, "iter": 120, "lr": 0.02, "loss": 1.4, "bbox_mAP": 0.1, "bbox_mAP_copypaste": "0.1 0.2"},
        {"mode": "train", "epoch": 2, "iter": 50, "lr": 0.02, "memory": 3000, "time": 0.4, "loss": 1.0},
    ))
    assert claims(path)
    result = jsonlog.read(path)
    assert result.source == "mmdet_json" and result.problems == []
    assert result.series["loss"].steps.tolist() == [50, 100, 170]
    assert result.series["val/loss"].steps.tolist() == [120] and result.series["val/loss"].values.tolist() == [1.4]
    assert set(result.series) == {"lr", "loss", "val/loss", "val/bbox_mAP"}


def test_mmdet_iteration_based_runner_uses_iter_as_the_step(tmp_path):
    path = write(tmp_path, "run.log.json", json_lines(
        {"env_info": "x", "config": "y"},
        {"mode": "train", "iter": 50, "lr": 0.02, "loss": 1.5},
        {"mode": "val", "iter": 100, "lr": 0.02, "bbox_mAP": 0.2},
        {"mode": "train", "iter": 150, "lr": 0.02, "loss": 1.2},
    ))
    result = jsonlog.read(path)
    assert result.series["loss"].steps.tolist() == [50, 150]
    assert result.series["val/bbox_mAP"].steps.tolist() == [100]


def test_mmdet_duplicate_record_is_replaced_with_a_note(tmp_path):
    record = {"mode": "train", "epoch": 1, "iter": 50, "lr": 0.02, "loss": 1.5}
    path = write(tmp_path, "run.log.json", json_lines(
        {"env_info": "x", "config": "y"}, record, dict(record, loss=1.4), dict(record, iter=100, loss=1.3)))
    result = jsonlog.read(path)
    assert result.series["loss"].values.tolist() == [1.4, 1.3]
    assert result.notes == ["repeat at line 3: step 50 logged again; 2 earlier points replaced"]


def test_mmdet_header_line_longer_than_the_head_is_still_claimed(tmp_path):
    header = {"env_info": "x" * 100_000, "config": "y"}
    path = write(tmp_path, "20240101_000000.log.json", json_lines(header, {"mode": "train", "epoch": 1, "iter": 1, "loss": 1.0}))
    assert claims(path)
    assert jsonlog.read(path).series["loss"].values.tolist() == [1.0]


def test_mmengine_validation_steps_move_from_epoch_to_iteration(tmp_path):
    path = write(tmp_path, "scalars.json", json_lines(
        {"lr": 0.01, "data_time": 0.1, "loss": 1.0, "time": 0.3, "epoch": 1, "iter": 50, "memory": 100, "step": 50},
        {"lr": 0.01, "data_time": 0.1, "loss": 0.9, "time": 0.3, "epoch": 1, "iter": 100, "memory": 100, "step": 100},
        {"coco/bbox_mAP": 0.2, "data_time": 0.1, "time": 0.2, "step": 1},
        {"lr": 0.01, "data_time": 0.1, "loss": 0.8, "time": 0.3, "epoch": 2, "iter": 150, "memory": 100, "step": 150},
    ))
    result = jsonlog.read(path)
    assert result.source == "mmengine_json" and result.notes == []
    assert result.series["val/coco/bbox_mAP"].steps.tolist() == [100]
    assert result.series["loss"].steps.tolist() == [50, 100, 150]
    assert set(result.series) == {"lr", "loss", "val/coco/bbox_mAP"}


def trainer_state(log_history: list, **fields) -> str:
    state = {"best_metric": None, "epoch": 2.0, "global_step": 40, "log_history": log_history, "max_steps": 40}
    return json.dumps(dict(state, **fields), indent=2, sort_keys=True)


def test_trainer_state_round_trip(tmp_path):
    path = write(tmp_path, "trainer_state.json", trainer_state([
        {"epoch": 0.5, "grad_norm": 1.5, "learning_rate": 1e-4, "loss": 2.0, "step": 10},
        {"epoch": 1.0, "grad_norm": 1.2, "learning_rate": 5e-5, "loss": math.nan, "step": 20},
        {"epoch": 1.0, "eval_loss": 1.8, "eval_runtime": 3.0, "eval_samples_per_second": 9.0, "step": 20},
        {"epoch": 1.0, "predict_loss": 1.7, "predict_runtime": 3.0},
        {"epoch": 2.0, "step": 40, "total_flos": 1e12, "train_loss": 1.9, "train_runtime": 50.0},
    ]))
    result = jsonlog.read(path)
    assert result.source == "hf_trainer_state" and result.problems == []
    assert set(result.series) == {"grad_norm", "learning_rate", "loss", "eval_loss", "predict_loss"}
    assert math.isnan(result.series["loss"].values[1])  # a NaN loss is a point, not a gap
    assert result.series["predict_loss"].steps.tolist() == [20]


def test_trainer_state_rows_before_any_step_get_their_step_from_the_epoch(tmp_path):
    path = write(tmp_path, "trainer_state.json", trainer_state([
        {"epoch": 0.25, "predict_loss": 1.9},
        {"epoch": 0.5, "loss": 2.0, "step": 10},
        {"epoch": 1.0, "loss": 1.5, "step": 20},
    ]))
    assert jsonlog.read(path).series["predict_loss"].steps.tolist() == [5]


def test_truncated_trainer_state_keeps_the_entries_before_the_cut(tmp_path):
    text = trainer_state([{"epoch": 0.1 * step, "loss": 1.0 / step, "step": step} for step in range(1, 9)])
    cut = text.index('"step": 7') + 5
    path = write(tmp_path, "trainer_state.json", text[:cut])
    result = jsonlog.read(path)
    assert result.series["loss"].steps.tolist() == [1, 2, 3, 4, 5, 6]
    assert len(result.problems) == 1
    assert result.problems[0].where == f"line {text[:cut].count(chr(10)) + 1}"


def test_trainer_state_with_a_bad_entry_keeps_the_entries_after_it(tmp_path):
    text = trainer_state([{"loss": 1.0, "step": 1}, {"loss": 0.9, "step": 2}, {"loss": 0.8, "step": 3}])
    broken = text.replace('"loss": 0.9', '"loss": 0.9,,')
    path = write(tmp_path, "trainer_state.json", broken)
    result = jsonlog.read(path)
    assert result.series["loss"].steps.tolist() == [1, 3]
    bad_line = broken[:broken.index(",,")].count("\n") + 1
    assert wheres(result) == [f"line {bad_line}"]


def test_keras_history_steps_are_epoch_indices(tmp_path):
    path = write(tmp_path, "history.json", '{"loss": [1.0, 0.5, NaN], "val_loss": [1.1, null, 0.6], "accuracy": [0.1, 0.2, 0.3]}')
    assert claims(path)
    result = jsonlog.read(path)
    assert result.source == "keras_history_json" and result.problems == []
    assert result.series["loss"].steps.tolist() == [0, 1, 2] and math.isnan(result.series["loss"].values[2])
    assert result.series["val_loss"].steps.tolist() == [0, 2]


@pytest.mark.parametrize(("name", "content"), [
    ("config.json", json.dumps({"architectures": ["BertModel"], "hidden_size": 768, "num_hidden_layers": 12}, indent=2)),
    ("tokenizer.json", json.dumps({"version": "1.0", "truncation": None, "model": {"type": "BPE", "vocab": {"loss": 5}}})),
    ("training_args.json", json.dumps({"learning_rate": 5e-5, "num_train_epochs": 3, "logging_steps": 500}, indent=2)),
    ("all_results.json", json.dumps({"epoch": 3.0, "eval_loss": 0.5, "train_loss": 0.4, "train_runtime": 10.0}, indent=4)),
    ("eval_results.json", json.dumps({"epoch": 3.0, "eval_loss": 0.5})),
    ("history.json", '{"accuracy": [0.1, 0.2], "val_accuracy": [0.1, 0.3]}'),  # no loss key
    ("history.json", '{"loss": [1.0, 0.5], "val_loss": [1.1]}'),  # unequal lengths
    ("list.json", "[1, 2, 3]"),
    ("metrics.csv", '{"iteration": 1, "loss": 0.5}\n'),
    ("empty.json", ""),
])
def test_json_files_that_are_not_training_logs_are_not_claimed(tmp_path, name, content):
    assert not claims(write(tmp_path, name, content))


def test_a_large_tokenizer_json_is_not_claimed(tmp_path):
    vocab = {f"token{index}": index for index in range(20_000)}
    path = write(tmp_path, "tokenizer.json", json.dumps({"version": "1.0", "model": {"vocab": vocab}}, indent=2))
    assert path.stat().st_size > 65536 and not claims(path)


# ---- generated logs: damage -------------------------------------------------------------------

def detectron2_records(count: int) -> list[dict]:
    return [{"data_time": 0.01, "iteration": 20 * index + 19, "lr": 0.01, "total_loss": 1.0 / (index + 1)}
            for index in range(count)]


def test_a_bad_json_line_in_the_middle_is_reported_and_the_lines_after_it_are_kept(tmp_path):
    lines = json_lines(*detectron2_records(6)).splitlines(keepends=True)
    lines[2] = lines[2].replace('"lr": 0.01,', '"lr": 0.01,,')
    path = write(tmp_path, "metrics.json", "".join(lines))
    result = jsonlog.read(path)
    assert wheres(result) == ["line 3"]
    assert "not valid JSON" in result.problems[0].message and result.problems[0].file == str(path)
    assert result.series["total_loss"].steps.tolist() == [19, 39, 79, 99, 119]


def test_a_half_written_last_line_is_reported_and_the_lines_before_it_are_kept(tmp_path):
    text = json_lines(*detectron2_records(5))
    path = write(tmp_path, "metrics.json", text[:-25])
    result = jsonlog.read(path)
    assert wheres(result) == ["line 5"]
    assert "half-written last line" in result.problems[0].message
    assert len(result.series["total_loss"]) == 4


def test_a_non_numeric_value_is_a_problem_and_only_that_point_is_lost(tmp_path):
    records = detectron2_records(4)
    records[1]["total_loss"] = "oops"
    result = jsonlog.read(write(tmp_path, "metrics.json", json_lines(*records)))
    assert wheres(result) == ["line 2"] and "'oops'" in result.problems[0].message
    assert result.series["total_loss"].steps.tolist() == [19, 59, 79]
    assert len(result.series["lr"]) == 4


def test_a_record_without_its_step_key_is_a_problem(tmp_path):
    records = detectron2_records(3)
    del records[1]["iteration"]
    result = jsonlog.read(write(tmp_path, "metrics.json", json_lines(*records)))
    assert wheres(result) == ["line 2"]
    assert result.series["total_loss"].steps.tolist() == [19, 59]


@pytest.mark.parametrize("lines", [4, 40_000])  # small: read line by line; big: in blocks and pandas' parser
def test_step_counters_written_as_text_numbers_still_step_the_metrics(tmp_path, lines):
    """The step counter's points are kept apart from the metrics', text cells that are numbers too;
    a text that is no number is a problem on its line and that record has no step."""
    records = detectron2_records(lines)
    records[1]["iteration"] = str(records[1]["iteration"])  # "39"
    records[2]["iteration"] = "soon"
    records[3]["epoch"] = "1"  # bookkeeping no detectron2 reader uses: neither a series nor a problem
    result = jsonlog.read(write(tmp_path, "metrics.json", json_lines(*records)))
    assert [problem.where for problem in result.problems] == ["line 3", "line 3"]
    assert "'soon'" in result.problems[0].message and "no 'iteration'" in result.problems[1].message
    assert sorted(result.series) == ["lr", "total_loss"]
    assert result.series["total_loss"].steps.tolist()[:3] == [19, 39, 79]
    assert len(result.series["total_loss"]) == lines - 1


def test_undecodable_bytes_on_one_line_cost_only_that_line(tmp_path):
    lines = json_lines(*detectron2_records(4)).encode().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"0.01", b"0.0\xff1", 1)
    result = jsonlog.read(write(tmp_path, "metrics.json", b"".join(lines)))
    assert wheres(result) == ["line 2"]
    assert len(result.series["total_loss"]) == 3


@pytest.mark.parametrize(("name", "content"), [("metrics.json", ""), ("metrics.json", "\n\n"), ("trainer_state.json", "")])
def test_an_empty_file_is_a_problem(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert claims(path)  # so that the empty log is reported, not ignored
    result = jsonlog.read(path)
    assert result.series == {} and [problem.message for problem in result.problems] == ["empty file"]


def test_an_unreadable_path_is_a_problem(tmp_path):
    folder = tmp_path / "metrics.json"
    folder.mkdir()
    result = jsonlog.read(folder)
    assert result.series == {} and "cannot read" in result.problems[0].message


def test_the_fast_path_agrees_with_json_loads_on_awkward_lines(tmp_path):
    records = [
        {"iteration": 1, "total_loss": 1.0, "note": "a, b: c"},  # commas and colons inside a string
        {"iteration": 2, "total_loss": 0.9, "nested": {"x": 1}},  # a nested object
        {"iteration": 3, "total_loss": 0.8, "list": [1, 2, 3]},
        {"iteration": 4, "total_loss": 0.7, "quote\"d": 1.5},  # an escaped quote in a key
        {"iteration": 5, "total_loss": 0.6, "bbox/AP-baby bed": 3.0, "ключ": 2.0},
        {"iteration": 6, "total_loss": 0.5, "metrics/mAP_0.5:0.95": 0.25},  # a colon in a key
        {"iteration": 7, "total_loss": 0.4, "flag": True, "maybe": None},
        {"iteration": 8, "total_loss": -1e-300, "big": 1e300},
    ] + detectron2_records(3)
    path = write(tmp_path, "metrics.json", "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    result = jsonlog.read(path)
    assert result.problems == []
    assert result.series["total_loss"].values.tolist() == [record["total_loss"] for record in records]
    assert result.series["quote\"d"].steps.tolist() == [4]
    assert result.series["ключ"].values.tolist() == [2.0]
    assert result.series["bbox/AP-baby bed"].steps.tolist() == [5]
    assert result.series["metrics/mAP_0.5:0.95"].values.tolist() == [0.25]
    assert {"note", "nested", "list", "flag", "maybe"}.isdisjoint(result.series)


def test_a_broken_file_lists_a_bounded_number_of_problems(tmp_path):
    text = json_lines(*detectron2_records(3)) + "not json\n" * 500
    result = jsonlog.read(write(tmp_path, "metrics.json", text))
    assert len(result.problems) <= 100 and "more" in result.problems[-1].message
    assert len(result.series["total_loss"]) == 3


DAMAGE = st.binary(max_size=6).filter(lambda garbage: not any(chr(byte).isdigit() for byte in garbage)) | st.sampled_from(
    [b'"', b",", b"\n", b"\r", b"\xff", b"\x00", b"NaN", b"{", b"}", b"[", b"\\", b":", b'"a": 1, ', b'"b": "x", '])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(1, 2000), DAMAGE), max_size=6))
def test_damaged_json_lines_never_raise_and_each_damage_costs_at_most_one_record(tmp_path, damage):
    text = bytearray(json_lines(*detectron2_records(40)).encode())
    for position, garbage in damage:
        text[position:position] = garbage
    path = write(tmp_path, "metrics.json", bytes(text))
    result = jsonlog.read(path)
    assert all(problem.file == str(path) for problem in result.problems)
    if result.source == "detectron2_json":  # damage to the first lines can make it unrecognisable
        assert len(result.series.get("total_loss", [])) >= 40 - len(damage)


def damaged_big_json_lines(kind: str) -> bytes:
    """~1 MB of detectron2 or mmdetection JSON lines with damage spread over it: a cut line, a nested
    value, an escape, a text cell in a numeric key, a NaN, a restart, a line with many more keys,
    bytes that are not UTF-8, a CRLF line, and a half-written last line."""
    records = []
    for step in range(12_000):
        if kind == "mmdet":
            record = {"mode": "train", "epoch": step // 1000 + 1, "iter": step % 1000 + 1, "lr": 0.02,
                      "loss": 1 / (step + 1), "time": 0.3}
        else:
            record = {"data_time": 0.004, "iteration": step, "loss_cls": 1 / (step + 1), "lr": 0.02, "time": 0.3}
        records.append(json.dumps(record).encode())
    step_key = "iter" if kind == "mmdet" else "iteration"
    records[10] = records[10][:-7]
    records[3_000] = records[3_000][:-1] + b', "nested": {"a": [1, 2]}}'
    records[4_000] = records[4_000][:-1] + b', "na\\u00efve": 1.5}'
    records[5_000] = records[5_000].replace(b'"lr": 0.02', b'"lr": "high"')
    records[6_000] = records[6_000].replace(b'"lr": 0.02', b'"lr": NaN')
    records[7_000] = records[7_000].replace(f'"{step_key}": '.encode(), f'"{step_key}": 1'.encode())
    records[8_000] = records[8_000][:-1] + b", " + b", ".join(b'"ap%d": %d.5' % (i, i) for i in range(300)) + b"}"
    records[9_000] = records[9_000][:-1] + b', "note": "\xff"}'
    records[10_000] += b"\r"
    if kind == "mmdet":
        records.insert(0, b'{"env_info": "sys.platform: linux", "seed": 0}')
        records.insert(2_500, json.dumps({"mode": "val", "epoch": 3, "iter": 1000, "lr": 0.02, "bbox_mAP": 0.3}).encode())
    return b"\n".join(records) + b'\n{"iteration": 99'


@pytest.mark.parametrize("kind", ["detectron2", "mmdet"])
@pytest.mark.parametrize("given_bytes", [False, True], ids=["from the file", "bytes in hand"])
def test_big_json_lines_read_in_chunks_give_the_series_problems_and_notes_of_one_read(tmp_path, monkeypatch,
                                                                                     kind, given_bytes):
    """Files over textlog.CHUNK_BYTES are parsed a chunk of lines at a time (bounded memory); the
    result must be the one whole read's: every point, every problem at its own line, every restart."""
    from lrdiag.ingest import textlog

    data = damaged_big_json_lines(kind)
    path = write(tmp_path, "metrics.json", data)
    read = (lambda: jsonlog.read(path, data)) if given_bytes else (lambda: jsonlog.read(path))
    monkeypatch.setattr(textlog, "CHUNK_BYTES", 1 << 30)
    whole = read()
    monkeypatch.setattr(textlog, "CHUNK_BYTES", 1 << 16)
    assert len(data) > 10 * textlog.CHUNK_BYTES
    chunked = read()
    assert whole.source == chunked.source == f"{kind}_json"
    assert chunked.notes == whole.notes and any("restart" in note for note in whole.notes)
    assert sorted(chunked.problems) == sorted(whole.problems) and len(whole.problems) >= 4
    assert sorted(chunked.series) == sorted(whole.series) and "ap299" in whole.series
    for tag, series in whole.series.items():
        np.testing.assert_array_equal(chunked.series[tag].steps, series.steps)
        np.testing.assert_array_equal(chunked.series[tag].values, series.values)


def trainer_state_document(entries: int) -> dict:
    history = []
    for step in range(1, entries + 1):
        history.append({"epoch": step / 100, "grad_norm": 1 / step, "learning_rate": 5e-5, "loss": 2 / step, "step": step,
                        "note": "λ→ü" if step % 7 == 0 else "ok"})
        if step % 100 == 0:
            history.append({"epoch": step / 100, "eval_loss": 3 / step, "eval_runtime": 1.5, "step": step})
    history[50]["loss"] = "NaN"
    history[60] = "not an object"
    history[70]["nested"] = {"a": [1, {"b": 2}]}
    history[80]["step"] = 2.5
    history[90] = {"epoch": 0.9, "learning_rate": 1e-5}  # no step: takes the previous row's
    history.append({"epoch": entries / 100, "step": entries, "train_loss": 0.5, "train_runtime": 10.0})
    return {"best_metric": None, "epoch": entries / 100, "global_step": entries, "log_history": history,
            "max_steps": entries, "trial_name": "über"}


@pytest.mark.parametrize("indent", [None, 2])
def test_trainer_state_read_window_by_window_equals_the_whole_read(tmp_path, monkeypatch, indent):
    """A trainer_state.json is decoded a window at a time and tabled a batch of entries at a time
    (bounded memory); windows cut anywhere, even inside an entry or a UTF-8 sequence, must give
    exactly what reading the whole document gives, problems included."""
    path = write(tmp_path, "trainer_state.json", json.dumps(trainer_state_document(3_000), indent=indent))
    monkeypatch.setattr(jsonlog, "_WINDOW", 997)
    monkeypatch.setattr(jsonlog, "_LOOKAHEAD", 101)
    monkeypatch.setattr(jsonlog, "_BATCH", 333)
    assert jsonlog._streamed_log_history(path.read_bytes()) is not None
    streamed = jsonlog.read(path)
    monkeypatch.setattr(jsonlog, "_streamed_log_history", lambda data: None)
    whole = jsonlog.read(path)
    assert streamed.problems == whole.problems and len(whole.problems) == 2
    assert list(streamed.series) == list(whole.series) and "eval_loss" in whole.series
    for tag, series in whole.series.items():
        np.testing.assert_array_equal(streamed.series[tag].steps, series.steps)
        np.testing.assert_array_equal(streamed.series[tag].values, series.values)


def test_damaged_trainer_state_is_not_streamed_and_keeps_its_salvage(tmp_path):
    text = json.dumps(trainer_state_document(300), indent=2)
    cut = text.index('"step": 150') + 5
    path = write(tmp_path, "trainer_state.json", text[:cut] + "@" + text[cut + 1:])
    assert jsonlog._streamed_log_history(path.read_bytes()) is None
    result = jsonlog.read(path)
    assert any("not valid JSON" in problem.message for problem in result.problems)
    assert result.series["loss"].steps.size > 250


def test_real_and_sample_trainer_states_read_the_same_streamed_and_whole(monkeypatch):
    """Every trainer_state.json of the sample logs (and of ../shared/real_logs when present) is
    streamed, and streaming gives exactly the whole read's series and problems."""
    roots = [Path(__file__).parents[1] / "sample_logs"] + ([REAL_LOGS] if REAL_LOGS.is_dir() else [])
    paths = sorted(path for root in roots for path in root.rglob("trainer_state.json"))
    assert paths
    streamed_reader = jsonlog._streamed_log_history
    for path in paths:
        assert streamed_reader(path.read_bytes()) is not None, path
        streamed = jsonlog.read(path)
        monkeypatch.setattr(jsonlog, "_streamed_log_history", lambda data: None)
        whole = jsonlog.read(path)
        monkeypatch.setattr(jsonlog, "_streamed_log_history", streamed_reader)
        assert streamed.problems == whole.problems and list(streamed.series) == list(whole.series), path
        for tag, series in whole.series.items():
            np.testing.assert_array_equal(streamed.series[tag].steps, series.steps)
            np.testing.assert_array_equal(streamed.series[tag].values, series.values)


def test_a_document_whose_second_line_outgrows_a_chunk_is_still_told_from_its_first_64_kib(tmp_path, monkeypatch):
    """The format is told from the file's first 64 KiB even when the first chunk of whole lines is
    shorter (a short first line, then one longer than a chunk)."""
    from lrdiag.ingest import textlog

    history = [{"epoch": step / 100, "loss": 1 / step, "step": step} for step in range(1, 3000)]
    path = write(tmp_path, "trainer_state.json", '{\n"global_step": 2999, "log_history": ' + json.dumps(history) + "}\n")
    monkeypatch.setattr(textlog, "CHUNK_BYTES", 1 << 16)
    assert path.stat().st_size > 2 * textlog.CHUNK_BYTES
    result = jsonlog.read(path)
    assert result.source == "hf_trainer_state" and result.problems == []
    assert result.series["loss"].steps.tolist() == list(range(1, 3000))


TRAINER_VALUES = st.one_of(st.integers(-10 ** 20, 10 ** 20), st.floats(), st.text(max_size=4), st.booleans(),
                           st.none(), st.sampled_from(["NaN", "inf", "1.5", "}", "]", "{"]),
                           st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
TRAINER_ENTRIES = st.one_of(
    st.dictionaries(st.sampled_from(["loss", "eval_loss", "step", "epoch", "learning_rate", "train_runtime"]),
                    TRAINER_VALUES, max_size=5),
    st.builds(lambda step, loss: {"epoch": step / 10, "loss": loss, "step": step}, st.integers(0, 100), st.floats(0, 5)),
    st.integers())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(TRAINER_ENTRIES, max_size=60), indent=st.sampled_from([None, 2]),
       window=st.integers(40, 400))
def test_generated_trainer_states_read_the_same_streamed_and_whole(tmp_path, monkeypatch, entries, indent, window):
    """Windows cut anywhere, entries decoded as one list where they can be and one by one where
    not (a `}` in a nested value or a text), give exactly the whole read's series and problems."""
    path = write(tmp_path, "trainer_state.json", json.dumps({"global_step": 9, "log_history": entries}, indent=indent))
    monkeypatch.setattr(jsonlog, "_WINDOW", window)
    monkeypatch.setattr(jsonlog, "_LOOKAHEAD", window // 3)
    monkeypatch.setattr(jsonlog, "_BATCH", 7)
    streamed_reader = jsonlog._streamed_log_history
    streamed = jsonlog.read(path)
    monkeypatch.setattr(jsonlog, "_streamed_log_history", lambda data: None)
    whole = jsonlog.read(path)
    monkeypatch.setattr(jsonlog, "_streamed_log_history", streamed_reader)
    assert streamed.problems == whole.problems and list(streamed.series) == list(whole.series)
    for tag, series in whole.series.items():
        assert streamed.series[tag].steps.tolist() == series.steps.tolist()
        assert streamed.series[tag].values.view(np.int64).tolist() == series.values.view(np.int64).tolist()
