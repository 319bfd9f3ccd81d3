#!/usr/bin/python3
"""PyTorch CPU baseline for Cohort's built-in trainers (issue 17, item 6).

Trains the same models as train on random Fashion-MNIST-shaped data
(1x28x28 images, about half their pixels 0 as in real images, 10 classes):

  mlp: Linear 784-200, ReLU, Linear 200-10
  cnn: Conv2d(1, 32, 5, padding=2), ReLU, MaxPool2d(2),
       Conv2d(32, 64, 5, padding=2), ReLU, MaxPool2d(2),
       Linear(64*7*7, 512), ReLU, Linear(512, 10)

with SGD (lr 0.05, no momentum), mean cross-entropy, one epoch per
measurement, at batch 32 and 128, with torch.set_num_threads(1) and with
all cores. Prints one line per case: model, batch, threads, samples/s
(best, median and worst of --repeats epochs after a warm-up epoch).

Each thread count runs in a process of its own with OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set to it, since a BLAS reads them once at start.
The first line names the BLAS library PyTorch's Linear layers run on:
Debian's python3-torch takes whichever libblas.so.3 the system links
(the reference BLAS unless OpenBLAS is installed); to measure it on
OpenBLAS without changing the system default:

  apt-get install libopenblas0-pthread
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread /usr/bin/python3 bench/pytorch_cpu.py

Run: /usr/bin/python3 bench/pytorch_cpu.py [--repeats 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g).clamp_(min=0)  # about half 0
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def epoch(model, opt, x, y, batch, perm):
    for lo in range(0, len(x), batch):
        idx = perm[lo:lo + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


def measure(kind, n, batch, threads, repeats):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = MLP() if kind == "mlp" else CNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data(n)
    perm = torch.randperm(n)
    epoch(model, opt, x, y, batch, perm)  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        epoch(model, opt, x, y, batch, perm)
        rates.append(n / (time.perf_counter() - t))
    return max(rates), statistics.median(rates), min(rates)


def blas():
    """The BLAS library this process has mapped."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    return ", ".join(sorted(libs)) or "none mapped"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="measured epochs per case")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # one case, in a child
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # The same sample counts as the Go benchmarks: 2,000 images for the
    # MLP, 512 for the CNN.
    sizes = {"mlp": 2000, "cnn": 512}
    if args.threads:
        kind = args.models
        best, med, worst = measure(kind, sizes[kind], args.batch, args.threads, args.repeats)
        print(f"{kind:5} {args.batch:5d} {args.threads:7d} {best:10.0f} {med:10.0f} {worst:10.0f}", flush=True)
        return
    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores, MKL-DNN {torch.backends.mkldnn.is_available()}, BLAS {blas()}")
    print(f"{'model':5} {'batch':>5} {'threads':>7} {'best':>10} {'median':>10} {'worst':>10}  samples/s", flush=True)
    for kind in args.models.split(","):
        for batch in (32, 128):
            for threads in (1, cores):
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
                subprocess.run([sys.executable, __file__, "--models", kind, "--batch", str(batch),
                                "--threads", str(threads), "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
