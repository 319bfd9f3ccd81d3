#!/usr/bin/env python3
"""A Fashion-MNIST CNN in PyTorch, run by Cohort's exec trainer.

One loop over cohort_trainer.tasks() serves both of Cohort's modes: in
persistent mode (model.exec.mode: persistent) this process serves task
after task, keeping the model, the CUDA context and the data on the device;
in per-task mode it serves one task and exits. docs/trainer-protocol.md in
the Cohort repository is the contract. The network is McMahan et al.'s
FedAvg CNN: two 5x5 convolutions (same padding) each followed by ReLU and
2x2 max-pooling, a ReLU layer and the class logits; parameter names and
shapes are PyTorch's state_dict (conv1.weight [C1, 1, 5, 5], ..., fc2.bias
[10]), the same as Cohort's built-in `cnn` model.

Environment (set it in the job's model.env):
  FMNIST_CONV     channels of the two convolutions, default "32,64"
  FMNIST_HIDDEN   width of the fully connected layer, default 512
  FMNIST_THREADS  torch.set_num_threads (default: PyTorch's own choice)
  FMNIST_DEVICE   "cuda", "cuda:1", "cpu", ... (default: cuda when available)
  COHORT_PYTHON_PATH  the folder of cohort_trainer.py (default: the
                  repository's python/ folder, found from this file)
"""

import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.environ.get("COHORT_PYTHON_PATH") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import cohort_trainer as ct  # noqa: E402


class Net(nn.Module):
    def __init__(self, shape, classes, conv, hidden):
        super().__init__()
        c, h, w = shape
        self.conv1 = nn.Conv2d(c, conv[0], 5, padding=2)
        self.conv2 = nn.Conv2d(conv[0], conv[1], 5, padding=2)
        self.fc1 = nn.Linear(conv[1] * (h // 4) * (w // 4), hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def train(task, net, x, y, device):
    n, bs, mu = x.shape[0], max(1, min(task.batch_size, x.shape[0])), task.mu
    anchor = [p.detach().clone() for p in net.parameters()] if mu > 0 else None
    opt = torch.optim.SGD(net.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    gen = torch.Generator(device=device).manual_seed(task.seed)
    batches, steps = (n + bs - 1) // bs, 0
    net.train()
    for epoch in range(1, task.epochs + 1):
        total = torch.zeros((), device=device)
        perm = torch.randperm(n, generator=gen, device=device)
        for b in range(batches):
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            total += loss.detach() * idx.numel()
            if anchor is not None:  # FedProx: mu/2 * ||w - w_global||^2
                loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if b + 1 == batches:
                task.progress(epoch, b + 1, batches, loss.item())
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged in epoch {epoch} (loss {train_loss}); lower train.lr")
    return {"num_samples": n, "train_loss": train_loss, "steps": steps, "cuda": int(device.type == "cuda")}


@torch.no_grad()
def evaluate(task, net, x, y):
    net.eval()
    loss = correct = 0.0
    for i in range(0, x.shape[0], max(1, task.batch_size)):
        out = net(x[i : i + task.batch_size])
        loss += F.cross_entropy(out, y[i : i + task.batch_size], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + task.batch_size]).sum().item()
    return {"num_samples": x.shape[0], "loss": loss / x.shape[0], "accuracy": correct / x.shape[0]}


def main():
    if os.environ.get("FMNIST_THREADS"):
        torch.set_num_threads(int(os.environ["FMNIST_THREADS"]))
    device = torch.device(os.environ.get("FMNIST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
    conv = [int(c) for c in os.environ.get("FMNIST_CONV", "32,64").split(",")]
    hidden = int(os.environ.get("FMNIST_HIDDEN", "512"))
    net = None
    for task in ct.tasks():
        with task:  # a failed task is answered; the process serves the next
            if net is None:  # built once, on the first task
                net = Net(task.input_shape, task.classes, conv, hidden).to(device)
            if task.kind == "init":  # on the CPU: the same weights for a seed anywhere
                torch.manual_seed(task.seed)
                init = Net(task.input_shape, task.classes, conv, hidden)
                task.reply(weights=init.state_dict(), metrics={"num_params": sum(p.numel() for p in init.parameters())})
                continue
            net.load_state_dict({k: v.to(device) for k, v in task.weights().items()})
            x, y = task.data(device)
            if task.kind == "train":
                task.reply(weights=net.state_dict(), metrics=train(task, net, x, y, device))
            else:
                task.reply(metrics=evaluate(task, net, x, y))


if __name__ == "__main__":
    main()
