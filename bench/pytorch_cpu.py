#!/usr/bin/python3
"""PyTorch CPU baseline for Cohort's built-in trainers (issue 17, item 6).

Trains the same models as client/train on random Fashion-MNIST-shaped data
(1x28x28 images, about half their pixels 0 as in real images, 10 classes):

  mlp: Linear 784-200, ReLU, Linear 200-10
  cnn: Conv2d(1, 32, 5, padding=2), ReLU, MaxPool2d(2),
       Conv2d(32, 64, 5, padding=2), ReLU, MaxPool2d(2),
       Linear(64*7*7, 512), ReLU, Linear(512, 10)

with SGD (lr 0.05, no momentum), mean cross-entropy, one epoch per
measurement, at batch 32 and 128, with torch.set_num_threads(1) and with
all cores. Prints one line per case: model, batch, threads, samples/s
(best, median and worst of --repeats epochs after a warm-up epoch).

Run: /usr/bin/python3 bench/pytorch_cpu.py [--repeats 5]
"""
import argparse
import os
import statistics
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="measured epochs per case")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    args = ap.parse_args()
    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores, MKL-DNN {torch.backends.mkldnn.is_available()}")
    print(f"{'model':5} {'batch':>5} {'threads':>7} {'best':>10} {'median':>10} {'worst':>10}  samples/s")
    # The same sample counts as the Go benchmarks: 2,000 images for the
    # MLP, 512 for the CNN.
    sizes = {"mlp": 2000, "cnn": 512}
    for kind in args.models.split(","):
        for batch in (32, 128):
            for threads in (1, cores):
                best, med, worst = measure(kind, sizes[kind], batch, threads, args.repeats)
                print(f"{kind:5} {batch:5d} {threads:7d} {best:10.0f} {med:10.0f} {worst:10.0f}", flush=True)


if __name__ == "__main__":
    main()
