#!/bin/bash
# Built-in trainers against PyTorch on the CPU, interleaved: each round
# runs the Go benchmarks (MLP and CNN, batch 32 and 128, GOMAXPROCS 1 and
# all cores), then bench/pytorch_cpu.py (1 thread and all cores). On a
# shared machine run several rounds and report the range.
#
#   bench/train_vs_pytorch.sh [rounds]      (default 3; from the repository root)
set -euo pipefail
rounds=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)/train.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
(cd "$root" && go test -c -o "$bin" ./train)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for r in $(seq "$rounds"); do
	echo "== round $r $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
	(cd "$root/train" && "$bin" -test.run XXX -test.bench 'TrainMLP|TrainCNN' -test.benchtime 3x | grep Benchmark)
	/usr/bin/python3 "$root/bench/pytorch_cpu.py" --repeats 3
done
