#!/bin/sh
# GPU check of the exec trainer's modes, from the repository root on a
# machine with an NVIDIA GPU and a CUDA build of PyTorch as `python3`:
#   go build -o bin/cohort ./cmd/cohort    # here or elsewhere
#   sh examples/pytorch-fmnist/gpucheck.sh [COHORT] [DATA] [OUT]
# COHORT is the binary (bin/cohort), DATA Fashion-MNIST's IDX folder
# (/usr/share/datasets/fashion-mnist), OUT where logs go (/tmp/gpucheck).
# It runs plain.py (one PyTorch process, data on the GPU), then job.yaml cut
# to ROUNDS rounds (default 3) in persistent and in per-task mode, and
# prints each run's wall time, its comparison table and the centralized
# arm's training seconds per round.
set -u
B=$(realpath "${1:-bin/cohort}")
D=$(realpath "${2:-/usr/share/datasets/fashion-mnist}")
O=${3:-/tmp/gpucheck}
R=${ROUNDS:-3}
PY=${PYTHON:-python3}
mkdir -p "$O" && O=$(realpath "$O")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
cd examples/pytorch-fmnist || exit 1
"$PY" plain.py --data "$D" --epochs "$R" --batch-size 32 2>&1 | tee "$O/plain.txt"
export COHORT_DATA="$D"
for mode in persistent per-task; do
	sed -e "s|/usr/bin/python3|$PY|" -e "s|exec: {mode: persistent}|exec: {mode: $mode}|" \
		-e "s|^rounds: 10|rounds: $R|" -e "s|centralized: {epochs: 10}|centralized: {epochs: $R}|" \
		${SED:-} job.yaml >"gpucheck-$mode.yaml"
	start=$(date +%s.%N)
	"$B" run --log-level debug --db "$O/$mode.db" "gpucheck-$mode.yaml" >"$O/run-$mode.log" 2>&1
	rc=$?
	end=$(date +%s.%N)
	rm -f "gpucheck-$mode.yaml"
	echo "mode $mode rc $rc wall_seconds $(awk "BEGIN{print $end - $start}")"
	grep -E "^(arm|centralized|fedavg|fedprox) " "$O/run-$mode.log" | grep -v ": "
	grep "task_trained" "$O/run-$mode.log" | grep "site=central" | sed 's/.*\(seconds=[0-9.]*\).*/central \1/'
	grep -c trainer_worker_started "$O/run-$mode.log" | sed 's/^/workers_started /'
	grep -c "msg=trainer_started" "$O/run-$mode.log" | sed 's/^/per_task_processes /'
done
