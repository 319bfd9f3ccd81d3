#!/usr/bin/env python3
"""A Fashion-MNIST CNN in PyTorch, run by Cohort's exec trainer.

Cohort starts this script once per task (init, train or evaluate) with
COHORT_TASK naming a JSON task file; weights and data come and go as
safetensors files. docs/trainer-protocol.md in the Cohort repository is the
contract. The network is McMahan et al.'s FedAvg CNN: two 5x5 convolutions
(same padding) each followed by ReLU and 2x2 max-pooling, a ReLU layer and
the class logits; parameter names and shapes are PyTorch's state_dict
(conv1.weight [C1, 1, 5, 5], ..., fc2.bias [10]), the same as Cohort's
built-in `cnn` model.

Environment (set it in the job's model.env):
  FMNIST_CONV     channels of the two convolutions, default "32,64"
  FMNIST_HIDDEN   width of the fully connected layer, default 512
  FMNIST_THREADS  torch.set_num_threads (default: PyTorch's own choice)
  FMNIST_DEVICE   "cuda", "cuda:1", "cpu", ... (default: cuda when available)

Works with PyTorch 1.13 and 2.x; uses the `safetensors` package when it is
installed and its own reader and writer otherwise.
"""

import ctypes
import json
import math
import os
import struct
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from safetensors.torch import load_file as _st_load, save_file as _st_save
except ImportError:  # the few lines below do the same
    _st_load = _st_save = None

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    """Returns {name: tensor} from a safetensors file (little-endian host)."""
    if _st_load is not None:
        return _st_load(path)
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        dtype = _DTYPES[h["dtype"]]
        begin, end = h["data_offsets"]
        if end == begin:
            out[name] = torch.zeros(h["shape"], dtype=dtype)
            continue
        size = torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(buf, dtype=dtype, count=(end - begin) // size, offset=8 + n + begin)
        out[name] = t.reshape(h["shape"])
    return out


def write_safetensors(path, tensors):
    """Writes {name: tensor} as F32 safetensors, atomically."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    tmp = path + ".tmp"
    if _st_save is not None:
        _st_save(tensors, tmp)
    else:
        header, off = {}, 0
        for k, v in tensors.items():
            header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + 4 * v.numel()]}
            off += 4 * v.numel()
        hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
        hb += b" " * (-len(hb) % 8)
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for v in tensors.values():
                if v.numel():
                    f.write(ctypes.string_at(v.data_ptr(), 4 * v.numel()))
    os.replace(tmp, path)


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


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, allow_nan=False)
    os.replace(tmp, path)


def load_data(path, device):
    d = read_safetensors(path)
    return d["x"].to(device, torch.float32), d["y"].to(device).long()


def train(task, net, device):
    x, y = load_data(task["data"]["train"], device)
    n, bs = x.shape[0], max(1, min(task["batch_size"], x.shape[0]))
    mu = task["mu"]
    anchor = [p.detach().clone() for p in net.parameters()] if mu > 0 else None
    opt = torch.optim.SGD(net.parameters(), lr=task["lr"], momentum=task["momentum"], weight_decay=task["weight_decay"])
    gen = torch.Generator().manual_seed(task["seed"])
    batches = (n + bs - 1) // bs
    steps, last_report, start = 0, 0.0, time.time()
    net.train()
    for epoch in range(1, task["epochs"] + 1):
        total = torch.zeros((), device=device)
        perm = torch.randperm(n, generator=gen).to(device)
        for b in range(batches):
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            total += loss.detach() * idx.numel()
            if anchor is not None:  # FedProx: mu/2 * ||w - w_global||^2
                prox = sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
                loss = loss + mu / 2 * prox
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.time() - last_report >= 1.0 or b + 1 == batches:
                last_report = time.time()
                print("COHORT_PROGRESS " + json.dumps({"epoch": epoch, "batch": b + 1, "batches": batches, "loss": loss.item()}), flush=True)
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged in epoch {epoch} (loss {train_loss}); lower train.lr")
    seconds = time.time() - start
    write_safetensors(task["weights_out"], net.state_dict())
    return {
        "num_samples": n,
        "train_loss": train_loss,
        "steps": steps,
        "samples_per_second": n * task["epochs"] / max(seconds, 1e-9),
        "cuda": 1 if device.type == "cuda" else 0,
    }


@torch.no_grad()
def evaluate(task, net, device):
    x, y = load_data(task["data"]["test"], device)
    n, bs = x.shape[0], max(1, task["batch_size"])
    net.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    for i in range(0, n, bs):
        out = net(x[i : i + bs])
        loss += F.cross_entropy(out, y[i : i + bs], reduction="sum")
        correct += (out.argmax(1) == y[i : i + bs]).sum()
    loss = loss.item() / n
    if not math.isfinite(loss):
        raise FloatingPointError(f"the model's loss is {loss}: the weights diverged; lower train.lr")
    return {"num_samples": n, "loss": loss, "accuracy": correct.item() / n}


def main():
    path = os.environ.get("COHORT_TASK")
    if not path:
        print("COHORT_TASK is not set: Cohort's exec trainer runs this script (see docs/trainer-protocol.md)", file=sys.stderr)
        return 2
    with open(path) as f:
        task = json.load(f)
    try:
        return run(task)
    except Exception as e:  # reported to Cohort, with the traceback on stderr
        traceback.print_exc()
        try:
            write_json(task["metrics_out"], {"error": f"{type(e).__name__}: {e}"})
        except Exception:
            pass
        return 1


def run(task):
    if task.get("version") != 1:
        print(f"task version {task.get('version')}; this script speaks version 1", file=sys.stderr)
        return 2
    if os.environ.get("FMNIST_THREADS"):
        torch.set_num_threads(int(os.environ["FMNIST_THREADS"]))
    device = torch.device(os.environ.get("FMNIST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
    conv = [int(c) for c in os.environ.get("FMNIST_CONV", "32,64").split(",")]
    hidden = int(os.environ.get("FMNIST_HIDDEN", "512"))
    if len(conv) != 2 or len(task["input_shape"]) != 3:
        print(f"FMNIST_CONV must list 2 widths and the input must be images [C, H, W]; got {conv} and {task['input_shape']}", file=sys.stderr)
        return 2
    torch.manual_seed(task["seed"])
    net = Net(task["input_shape"], task["classes"], conv, hidden).to(device)
    kind = task["kind"]
    if kind == "init":
        write_safetensors(task["weights_out"], net.state_dict())
        write_json(task["metrics_out"], {"num_params": sum(p.numel() for p in net.parameters())})
        return 0
    net.load_state_dict({k: v.to(device) for k, v in read_safetensors(task["weights_in"]).items()})
    if kind == "train":
        metrics = train(task, net, device)
    elif kind == "evaluate":
        metrics = evaluate(task, net, device)
    else:
        print(f"unknown task kind {kind!r}", file=sys.stderr)
        return 2
    write_json(task["metrics_out"], metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
