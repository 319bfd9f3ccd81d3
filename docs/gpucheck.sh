#!/bin/sh
# GPU checks for the energy package; run on a machine with an NVIDIA GPU from
# the repository root, after building here:
#   go build -o bin/cohort ./cmd/cohort && go test -c -o bin/energy.test ./energy
set -x
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit --format=csv
./bin/cohort energy probe --seconds 5
export COHORT_GPU_LOAD_CMD="python3 -c \"import torch,time
x=torch.randn(8192,8192,device='cuda')
t=time.time()
while time.time()-t<20:
    y=x@x
torch.cuda.synchronize()
print('load done')\""
./bin/energy.test -test.run 'TestRealGPU|TestOpenNVML' -test.v
./bin/energy.test -test.run XXX -test.bench 'NVMLSample|NVMLEnergyCounter|BenchmarkSample' -test.benchtime 3s
# Sampling cost at 10 Hz over 20 s of the probe: CPU time of the process.
/usr/bin/time -v ./bin/cohort energy probe --seconds 20 2>&1 | grep -E "User time|System time|Elapsed|gpu 0"
./bin/cohort run examples/fashion-mnist/quick.yaml --db /tmp/q.db 2>&1 | tail -6
