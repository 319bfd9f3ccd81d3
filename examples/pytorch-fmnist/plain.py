#!/usr/bin/env python3
"""The baseline: train.py's CNN trained in one plain PyTorch process.

    python3 plain.py [--data DIR] [--epochs 3] [--batch-size 32] [--lr 0.05]

Reads Fashion-MNIST's IDX files (train-images-idx3-ubyte[.gz], ...) from
DIR (default /usr/share/datasets/fashion-mnist), keeps the whole training
set on the device (cuda when available; FMNIST_DEVICE picks another), and
trains with SGD as Cohort's centralized arm does: a torch generator on the
device shuffles each epoch. Prints one line per epoch,
`plain_epoch_seconds S`, and at the end `plain_test_accuracy A`, for a
comparison with the epoch time of Cohort's centralized arm (same model, same
batch size, data on the device). FMNIST_CONV and FMNIST_HIDDEN size the
network as for train.py.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import Net  # noqa: E402  (the same network as the trainer's)


def idx(folder, name):
    """Returns an IDX file's array as a uint8 tensor, from name or name.gz."""
    path = os.path.join(folder, name)
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        buf = f.read()
    dims = buf[3]
    shape = struct.unpack(">" + "I" * dims, buf[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(buf[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    device = torch.device(os.environ.get("FMNIST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
    conv = [int(c) for c in os.environ.get("FMNIST_CONV", "32,64").split(",")]
    hidden = int(os.environ.get("FMNIST_HIDDEN", "512"))

    def load(prefix):
        x = idx(args.data, f"{prefix}-images-idx3-ubyte").to(device).float().div_(255).unsqueeze(1)
        y = idx(args.data, f"{prefix}-labels-idx1-ubyte").to(device).long()
        return x, y

    x, y = load("train")
    tx, ty = load("t10k")
    torch.manual_seed(args.seed)
    net = Net([1, 28, 28], 10, conv, hidden).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, bs = x.shape[0], args.batch_size
    print(f"plain_device {device} plain_samples {n} plain_batch_size {bs}", flush=True)
    for epoch in range(args.epochs):
        sync()
        start = time.time()
        net.train()
        perm = torch.randperm(n, generator=gen, device=device)
        for b in range(0, n, bs):
            idx_ = perm[b : b + bs]
            loss = F.cross_entropy(net(x[idx_]), y[idx_])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync()
        print(f"plain_epoch_seconds {time.time() - start:.3f}", flush=True)
    net.eval()
    with torch.no_grad():
        correct = sum((net(tx[i : i + 1000]).argmax(1) == ty[i : i + 1000]).sum().item() for i in range(0, tx.shape[0], 1000))
    print(f"plain_test_accuracy {correct / tx.shape[0]:.4f}", flush=True)


if __name__ == "__main__":
    main()
