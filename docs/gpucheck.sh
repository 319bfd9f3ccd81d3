#!/bin/bash
# The GPU check: run on a machine with an NVIDIA GPU and a CUDA build of
# PyTorch on `python3`, from the repository root, after preparing bin/ on a
# machine with Go (nothing here needs Go):
#
#   docs/gpucheck.sh build      # here: bin/cohort, bin/energy.test, bin/fmnist/
#   docs/gpucheck.sh            # there: prints every figure; OUT=dir keeps the files
#
# It prints: the GPU and the energy sources; the energy package's real-GPU
# tests; the plain PyTorch epoch of examples/pytorch-fmnist's CNN (the
# baseline); the full example (4 sites, Dirichlet 0.5, 5 rounds, persistent
# trainers, all four sites on the one GPU) with its comparison table; and
# the reconciliation of each arm's energy against NVML's counter read by an
# independent witness (docs/gpuenergy.py) over the arm's wall time, the
# share of each site task inside the trainer, and the centralized epoch
# against the plain one.
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = build ]; then
  set -e
  mkdir -p bin/fmnist
  go build -trimpath -ldflags '-s -w' -o bin/cohort ./cmd/cohort
  go test -c -o bin/energy.test ./energy
  cp /usr/share/datasets/fashion-mnist/*.gz bin/fmnist/
  gzip -f bin/cohort bin/energy.test   # what travels to the GPU machine stays small
  exit 0
fi
for f in bin/cohort bin/energy.test; do
  [ -f "$f.gz" ] && gunzip -f "$f.gz"
done
OUT=${OUT:-/tmp/gpucheck}
mkdir -p "$OUT"
PY=${PY:-python3}
export COHORT_DATA=$PWD/bin/fmnist
set -x
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit --format=csv
"$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
./bin/cohort energy probe --seconds 3
export COHORT_GPU_LOAD_CMD="$PY -c \"import torch,time
x=torch.randn(8192,8192,device='cuda')
t=time.time()
while time.time()-t<8:
    y=x@x
torch.cuda.synchronize()
print('load done')\""
timeout 90 ./bin/energy.test -test.run 'TestRealGPU|TestOpenNVML' -test.v 2>&1 | tail -25

# The baseline: the same CNN in one plain PyTorch process, batch 32.
timeout 90 "$PY" examples/pytorch-fmnist/plain.py --data "$COHORT_DATA" --epochs 3 --batch-size 32 | tee "$OUT/plain.txt"
PLAIN=$(awk '/^plain_epoch_seconds/ {v=$2} END {print v}' "$OUT/plain.txt")

# The full example, five rounds, trainers on `python3`, with the witness.
sed -e "s|\"/usr/bin/python3\"|\"$PY\"|" -e 's/^rounds: 10/rounds: 5/' -e 's/epochs: 10}/epochs: 5}/' \
  examples/pytorch-fmnist/job.yaml > examples/pytorch-fmnist/gpu.yaml
"$PY" docs/gpuenergy.py log "$OUT/counter.csv" 0.1 &
WITNESS=$!
sleep 1
timeout 300 ./bin/cohort run --db "$OUT/gpu.db" examples/pytorch-fmnist/gpu.yaml 2>"$OUT/run.log" | tail -8
sleep 1
kill $WITNESS; wait $WITNESS
grep -E 'level=(WARN|ERROR)' "$OUT/run.log" | head -10
"$PY" docs/gpuenergy.py reconcile "$OUT/gpu.db" "$OUT/counter.csv" ${PLAIN:+$PLAIN}
