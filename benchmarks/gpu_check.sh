#!/usr/bin/env bash
# The replay benchmark on a GPU machine (fresh, with this repository and a package registry):
# installs torch with CUDA and lrdiag, then times 8 candidates x 3 seeds of the example trainer
# against one replay alone, locally and as Ray tasks, and the CLI's own replay on CUDA.
# About 8 minutes in all, installs included. Everything it prints lands in $OUT/ too.
#
#     OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lrdiag-gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
started=$SECONDS
step() { echo; echo "== $* (at ${SECONDS}s)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
nproc

step "install: torch (a CUDA build from the registry), lrdiag, ray"
VENV=/tmp/lrdiag-gpu-venv
python3 -m venv "$VENV" && . "$VENV/bin/activate" || echo "no venv: installing into the system python"
PIP="python3 -m pip install --quiet --disable-pip-version-check"
$PIP torch || $PIP --break-system-packages torch
$PIP -e . "ray>=2.9" || $PIP --break-system-packages -e . "ray>=2.9"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/torch.txt"

step "benchmark: 8 candidates x 3 seeds, local processes on CUDA"
timeout 240 python3 benchmarks/bench_replay.py --device cuda --json "$OUT/bench_replay_local.json"
echo "exit $?"

step "the CLI's replay on CUDA, JSON kept"
timeout 90 python3 -m lrdiag recommend sample_logs/example_spiky --trainer lrdiag.examples.spiky_mlp:trainer \
    --device cuda --seeds 3 --out "$OUT/replays" --format json > "$OUT/recommend_cuda.json"
echo "exit $?"
python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; print({c['name']: c['replay']['status'] for c in r['candidates']}, 'wall', round(r['replay']['wall_seconds'],1), 's, gpu', r['replay']['gpu'])" "$OUT/recommend_cuda.json"
rm -rf "$OUT/replays"  # event files: the JSON above holds the figures

step "benchmark: the same as Ray tasks with 1/8 GPU each, if time is left"
if (( SECONDS - started < 360 )); then
    timeout $(( 470 - (SECONDS - started) )) python3 benchmarks/bench_replay.py --device cuda --executor ray \
        --json "$OUT/bench_replay_ray.json"
    echo "exit $?"
else
    echo "skipped: ${SECONDS}s used already"
fi
step "done in ${SECONDS}s"
