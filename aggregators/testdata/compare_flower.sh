#!/bin/sh
# compare_flower.sh runs BenchmarkFedAvg10x10M, BenchmarkReadFloor10x10M
# and Flower's NumPy aggregate (flower_baseline.py) by turns, RUNS times
# (default 5), and prints each turn's times and ratios: flower/fedavg is
# how many times faster a FedAvg round is than Flower's aggregate in the
# same turn; fedavg/floor is how many plain reads of the updates a round
# costs. Each Go figure is the mean over ROUNDS rounds (default 25) after
# a warm-up run of the same length; Flower's is its best of 5, so the
# ratio is conservative. Run it from the repository root, on a machine as
# idle as you can get (the turns interleave so that both sides see the
# same load):
#
#	sh aggregators/testdata/compare_flower.sh
#
# It needs Go and a python3 with numpy (PYTHON, default /usr/bin/python3).
set -eu
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-25}
PYTHON=${PYTHON:-/usr/bin/python3}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/agg.test" ./aggregators/
here=$(pwd)
echo "turn  fedavg_ms  cpu_ms  floor_ms  flower_ms  flower/fedavg  fedavg/floor"
i=1
while [ "$i" -le "$RUNS" ]; do
	out=$(cd "$here/aggregators" && "$bin/agg.test" -test.run XXX -test.bench '^Benchmark(FedAvg|ReadFloor)10x10M$' -test.benchtime "${ROUNDS}x" -test.count 2)
	fedavg=$(echo "$out" | awk '/^BenchmarkFedAvg10x10M/ {ms = $3 / 1e6; cpu = $7} END {print ms, cpu}')
	floor=$(echo "$out" | awk '/^BenchmarkReadFloor10x10M/ {ms = $3 / 1e6} END {print ms}')
	flower=$("$PYTHON" aggregators/testdata/flower_baseline.py | awk '{print $3}')
	echo "$i $fedavg $floor $flower" | awk '{printf "%4d  %9.1f  %6.1f  %8.1f  %9.0f  %13.2f  %12.2f\n", $1, $2, $3, $4, $5, $5 / $2, $2 / $4}'
	i=$((i + 1))
done
