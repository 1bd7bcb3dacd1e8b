"""`analyze --executor ray` against a real Ray on 127.0.0.1: the local pool's output byte for byte,
a failing run as an error line, a dead worker, and the one-line errors (no Ray, no cluster there)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from lrdiag import pipeline  # noqa: E402
from lrdiag.cli import cli  # noqa: E402
from lrdiag.config import project_setup, rule_set  # noqa: E402
from lrdiag.render import html, report  # noqa: E402

SAMPLES = Path(__file__).parent.parent / "sample_logs"


@pytest.fixture(scope="module")
def local_ray():
    """One Ray of this module's own, on the loopback interface, 2 CPUs, torn down after it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False, _temp_dir="/tmp/ray")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """24 small CSV runs, healthy, spiking, one with a NaN, and one with a header only (an error line)."""
    folder = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    steps = np.arange(300)
    for index in range(24):
        loss = 2.0 * np.exp(-steps / 80) + 0.1 + 0.02 * rng.standard_normal(steps.size)
        if index % 5 == 1:
            loss[150] *= 8  # a spike at step 150
        if index == 7:
            loss[200] = np.nan
        (folder / f"run{index:02d}").mkdir()
        np.savetxt(folder / f"run{index:02d}" / "metrics.csv", np.c_[steps, loss], delimiter=",", fmt=["%d", "%.6g"],
                   header="step,train_loss", comments="")
    (folder / "run24").mkdir()
    (folder / "run24" / "metrics.csv").write_text("step,train_loss\n")
    return folder


def analyze_json(*args: str):
    result = CliRunner().invoke(cli, ["analyze", "--format", "json", *args])
    return result.exit_code, result.stdout, result.stderr


def test_ray_gives_the_json_of_the_local_pool_byte_for_byte(local_ray, runs):
    local = analyze_json(str(runs), str(SAMPLES), "--jobs", "2")
    on_ray = analyze_json(str(runs), str(SAMPLES), "--executor", "ray")
    assert local == on_ray
    code, stdout, stderr = on_ray
    assert code == 2 and stderr.startswith("lrdiag: error: run24: no file of this run could be read: ")
    assert '"run": "run07"' in stdout and '"rule": "LRD105"' in stdout and '"rule": "LRD101"' in stdout


def test_relative_paths_are_read_from_the_drivers_working_directory(local_ray, runs, monkeypatch):
    monkeypatch.chdir(runs.parent)  # the workers were started elsewhere, with the module's Ray
    relative = analyze_json(runs.name, "--executor", "ray")
    assert relative == analyze_json(runs.name, "--jobs", "2")
    assert f'"{runs.name}/run00/metrics.csv"' in relative[1] and relative[0] == 2


def test_a_cluster_at_an_address_gives_the_same_json(local_ray, runs):
    # Another process joins this module's Ray by its address, as a driver joins a cluster's head.
    port = local_ray.get_runtime_context().gcs_address.rpartition(":")[2]
    done = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", "--format", "json", str(runs), "--executor",
                           "ray", "--address", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == analyze_json(str(runs), "--jobs", "2")[:2]


def test_report_reads_runs_on_ray_as_the_local_pool_does(local_ray, runs):
    config, engine, roles = project_setup(None, (), None, None, ())
    args = ([str(runs)], engine, rule_set(config, ()), roles)
    assert html.render(report.build(*args, executor="ray")) == html.render(report.build(*args, jobs=2))


def _fails_on_some(spec, options):
    if spec.name == "run03":
        raise ValueError("a bug met on run03")
    if spec.name == "run05":
        os._exit(1)  # its worker dies, as under the OOM killer
    return pipeline.analyze_spec(spec, options)


def test_a_run_that_fails_on_a_worker_is_an_error_line_and_the_others_go_on(local_ray, runs, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    monkeypatch.setattr("lrdiag.cluster.CHUNKS_PER_CPU", 3)  # 25 runs in chunks of 4: run05's mates are kept
    specs, _ = pipeline.find_specs([str(runs)])
    entries, errors = pipeline.map_runs(_fails_on_some, specs, pipeline.Options(), executor="ray", progress=False)
    assert [entry["run"] for entry in entries] == [f"run{index:02d}" for index in range(24) if index not in (3, 5)]
    assert errors[0] == "run03: internal error (ValueError: a bug met on run03); this is a bug, please report it"
    assert errors[1].startswith("run05: the Ray task analyzing this run failed (")
    assert "worker" in errors[1] and "died" in errors[1] and "\x1b" not in errors[1], errors[1]
    assert errors[2].startswith("run24: no file of this run could be read")
    assert errors[0] == pipeline.map_runs(_fails_on_some, specs[3:4], pipeline.Options(), jobs=1)[1][0]


def test_ray_prints_the_progress_lines_of_the_local_pool(local_ray, runs, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 0.0)
    pipeline.analyze([str(runs)], pipeline.Options(), executor="ray")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 24 and lines[0].startswith("lrdiag: analyzing runs: 1 of 25 done (4%), ")


def test_an_address_where_no_ray_listens_is_one_line(runs):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    # In a process of its own: in this one, the module's Ray would be used as it is.
    done = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", str(runs), "--executor", "ray", "--address",
                           f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"lrdiag: error: --address 127.0.0.1:{port}: cannot reach a Ray head there "
                           "(Connection refused); is `ray start --head` running on it, and the port open?\n")


def test_without_ray_installed_the_error_says_how_to_install_it(runs):
    hide_ray = "import sys; sys.modules['ray'] = None; from lrdiag.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", hide_ray, "analyze", str(runs), "--executor", "ray"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "lrdiag: error: --executor ray needs Ray: pip install 'lrdiag[ray]'\n"


def test_many_runs_go_out_in_chunks_that_keep_every_cpu_busy():
    from lrdiag.cluster import chunk_size

    assert chunk_size(10_000, 2) == 256  # 40 tasks, not 10,000: one is ~7 s of a core's work
    assert chunk_size(10_000, 64) == 19  # 527 tasks: 8 a CPU, so that the last ones end together
    assert chunk_size(5, 2) == 1
