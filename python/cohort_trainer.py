"""Cohort's exec trainer protocol as one loop (docs/trainer-protocol.md).

    import cohort_trainer as ct
    for task in ct.tasks():
        w = task.weights()          # {name: tensor}; None for init
        x, y = task.data()          # the task's dataset, cached per file
        ...
        task.reply(weights=model.state_dict(), metrics={"train_loss": loss})

In per-task mode (Cohort sets COHORT_TASK) tasks() yields the one task of
the task file. In persistent mode (COHORT_MODE=persistent) it sends the
hello line and yields every task Cohort sends on fd 3 until that pipe
closes, answering each on fd 4.

Errors: an exception that leaves the loop body is answered (ok=false, or
{"error": ...} in metrics_out in per-task mode, with the exception's last
line) and ends the process with the traceback on stderr; Cohort starts a
new one for the next task. Python cannot resume a for loop its body left,
so to keep the process (its CUDA context, its data) across a failed task
wrap the body in `with task:`; then the loop goes on with the next task.

A single file, standard library only. Tensors are torch tensors when torch
imports, NumPy arrays otherwise (pass tensors=... to tasks() to choose);
safetensors files are read and written by the `safetensors` package when it
is installed and by the code below otherwise.
"""

import json
import math
import os
import struct
import sys
import time
import traceback

__all__ = ["tasks", "Task", "read_safetensors", "write_safetensors", "PROTOCOLS"]

PROTOCOLS = (1, 2)  # the task versions this helper speaks

_TORCH_DTYPES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}
_NUMPY_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}


def _backend(name):
    """Returns ("torch", torch) or ("numpy", numpy) for name "auto", "torch" or "numpy"."""
    if name in ("auto", "torch"):
        try:
            import torch

            return "torch", torch
        except ImportError:
            if name == "torch":
                raise
    import numpy

    return "numpy", numpy


def read_safetensors(path, tensors="auto"):
    """Returns {name: tensor} from a safetensors file (F32, F64, F16, BF16)."""
    kind, lib = _backend(tensors)
    if kind == "torch":
        try:
            from safetensors.torch import load_file

            return load_file(path)
        except ImportError:
            pass
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        begin, end = h["data_offsets"]
        dt = h["dtype"]
        if kind == "torch":
            torch = lib
            dtype = getattr(torch, _TORCH_DTYPES[dt])
            if end == begin:
                out[name] = torch.zeros(h["shape"], dtype=dtype)
                continue
            size = torch.empty((), dtype=dtype).element_size()
            t = torch.frombuffer(buf, dtype=dtype, count=(end - begin) // size, offset=8 + n + begin)
            out[name] = t.reshape(h["shape"])
        else:
            np = lib
            raw = bytes(buf[8 + n + begin : 8 + n + end])
            if dt == "BF16":  # the high half of an F32
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dt])
            out[name] = a.reshape(h["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """Writes {name: tensor or array} as F32 safetensors, atomically."""
    arrays = {}
    for k, v in tensors.items():
        if hasattr(v, "detach"):  # torch
            import torch

            arrays[k] = v.detach().to("cpu", torch.float32).contiguous().numpy() if _has_numpy() else v.detach().to("cpu", torch.float32).contiguous()
        else:
            import numpy as np

            arrays[k] = np.ascontiguousarray(v, dtype="<f4")
    header, off = {}, 0
    for k, v in arrays.items():
        nbytes = 4 * _numel(v)
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for v in arrays.values():
            if _numel(v):
                f.write(_tobytes(v))
    os.replace(tmp, path)


def _has_numpy():
    try:
        import numpy  # noqa: F401

        return True
    except ImportError:
        return False


def _numel(v):
    n = 1
    for d in v.shape:
        n *= d
    return n


def _tobytes(v):
    if hasattr(v, "tobytes"):
        return v.astype("<f4", copy=False).tobytes()
    import ctypes  # a torch tensor without NumPy

    return ctypes.string_at(v.data_ptr(), 4 * v.numel())


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, allow_nan=False)
    os.replace(tmp, path)


class Task:
    """One task: its settings as attributes, its inputs as methods."""

    def __init__(self, spec, loop):
        self.spec = spec
        self.id = spec.get("id")
        self.version = spec.get("version")
        self.kind = spec["kind"]
        self.seed = spec.get("seed", 0)
        self.epochs = spec.get("epochs", 0)
        self.batch_size = spec.get("batch_size", 0)
        self.lr = spec.get("lr", 0.0)
        self.momentum = spec.get("momentum", 0.0)
        self.weight_decay = spec.get("weight_decay", 0.0)
        self.mu = spec.get("mu", 0.0)
        self.input_shape = spec.get("input_shape", [])
        self.classes = spec.get("classes", 0)
        self.deadline = spec.get("deadline", 0)
        self.scratch_dir = spec.get("scratch_dir", "")
        self._loop = loop
        self._start = time.time()
        self.replied = False

    def weights(self):
        """The weights to start from, {name: tensor}; None for an init task."""
        path = self.spec.get("weights_in")
        return read_safetensors(path, self._loop.tensors) if path else None

    def data_path(self):
        d = self.spec.get("data") or {}
        return d.get("train") or d.get("test") or ""

    def data(self, device=None):
        """The task's dataset as (x, y): x [N, *input_shape] float32, y [N]
        class indices (int64), on device (torch: e.g. "cuda") if given.
        Cached per file and device across tasks (the last 4)."""
        path = self.data_path()
        if not path:
            raise ValueError(f"a {self.kind} task has no data")
        return self._loop.dataset(path, device)

    def progress(self, epoch, batch, batches, loss):
        """Reports progress: on the reply pipe in persistent mode (it arrives
        before the reply), a COHORT_PROGRESS line on stdout otherwise."""
        p = {"epoch": epoch, "batch": batch, "batches": batches, "loss": float(loss)}
        if self._loop.persistent:
            self._loop.send({"id": self.id, "progress": p})
            return
        print("COHORT_PROGRESS " + json.dumps(p), flush=True)

    def reply(self, weights=None, metrics=None):
        """Writes the weights (init, train) and metrics, adds trainer_seconds
        to them, and answers the task."""
        if self.replied:
            raise RuntimeError("the task was answered already")
        metrics = dict(metrics or {})
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"metric {k} is {v}: training diverged? lower train.lr")
        if self.spec.get("weights_out"):
            if weights is None:
                raise ValueError(f"a {self.kind} task must reply with weights")
            write_safetensors(self.spec["weights_out"], weights)
        metrics["trainer_seconds"] = time.time() - self._start
        _write_json(self.spec["metrics_out"], metrics)
        self.replied = True
        self._loop.answer(self, None)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        """`with task:` around the loop body answers a task whose body
        raised (ok=false, the exception's last line) and, in persistent
        mode, lets the loop go on with the next task in this process."""
        if value is None or not isinstance(value, Exception):
            return False
        traceback.print_exception(kind, value, tb)
        sys.stderr.flush()
        if not self.replied:
            _answer_error(self._loop, self, value)
        if not self._loop.persistent:
            sys.exit(1)
        return True


class _Loop:
    def __init__(self, tensors):
        self.tensors = tensors
        self.cache = {}  # (data path, device) -> (x, y), oldest first
        self.current = None  # the task the loop body runs
        self.persistent = os.environ.get("COHORT_MODE") == "persistent"
        self.replies = None
        if self.persistent:
            version = int(os.environ.get("COHORT_PROTOCOL", "0"))
            if version not in PROTOCOLS:
                sys.exit(f"cohort_trainer: Cohort speaks protocol {version}; this helper speaks {PROTOCOLS}")
            self.tasks_in = os.fdopen(int(os.environ["COHORT_TASKS_FD"]), "r", encoding="utf-8")
            self.replies = os.fdopen(int(os.environ["COHORT_REPLIES_FD"]), "w", encoding="utf-8")
            self.send({"hello": {"protocol": 2}})

    def send(self, obj):
        self.replies.write(json.dumps(obj) + "\n")
        self.replies.flush()

    def dataset(self, path, device):
        key = (path, str(device))
        if key in self.cache:
            self.cache[key] = self.cache.pop(key)  # most recent last
            return self.cache[key]
        d = read_safetensors(path, self.tensors)
        x, y = d["x"], d["y"]
        if hasattr(y, "long"):
            x, y = x.float(), y.long()
            if device is not None:
                x, y = x.to(device), y.to(device)
        else:
            x, y = x.astype("float32", copy=False), y.astype("int64")
        while len(self.cache) >= 4:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = (x, y)
        return x, y

    def answer(self, task, error):
        if not self.persistent:
            return
        if error is None:
            self.send({"id": task.id, "ok": True})
        else:
            self.send({"id": task.id, "ok": False, "error": error})

    def specs(self):
        if not self.persistent:
            path = os.environ.get("COHORT_TASK")
            if not path:
                sys.exit("cohort_trainer: neither COHORT_TASK nor COHORT_MODE=persistent is set: Cohort's exec trainer runs this script (docs/trainer-protocol.md)")
            with open(path) as f:
                yield json.load(f)
            return
        for line in self.tasks_in:
            if line.strip():
                yield json.loads(line)


def tasks(tensors="auto"):
    """Yields the tasks Cohort hands this process (see the module doc).
    tensors: "auto" (torch if it imports, else NumPy), "torch" or "numpy"."""
    loop = _Loop(tensors)
    previous = sys.excepthook

    def hook(kind, value, tb):  # an exception ended the loop: answer its task
        previous(kind, value, tb)
        if loop.current is not None and not loop.current.replied:
            _answer_error(loop, loop.current, value)
        sys.stderr.flush()

    sys.excepthook = hook
    for spec in loop.specs():
        task = Task(spec, loop)
        if spec.get("version") not in PROTOCOLS:
            print(f"cohort_trainer: task version {spec.get('version')}; this helper speaks {PROTOCOLS}", file=sys.stderr)
            _answer(loop, task, f"task version {spec.get('version')}; the trainer speaks {PROTOCOLS}")
            if not loop.persistent:
                sys.exit(2)
            continue
        loop.current = task
        yield task
        loop.current = None
        if not task.replied:
            _answer(loop, task, f"the loop body did not call task.reply() for the {task.kind} task")
            if not loop.persistent:
                sys.exit(1)
    sys.excepthook = previous


def _last_line(e):
    lines = [l for l in f"{type(e).__name__}: {e}".splitlines() if l.strip()]
    return lines[-1] if lines else type(e).__name__


def _answer_error(loop, task, e):
    _answer(loop, task, _last_line(e))


def _answer(loop, task, message):
    """Fails task: {"error": message} into metrics_out, and the reply."""
    task.replied = True
    try:
        _write_json(task.spec["metrics_out"], {"error": message})
    except Exception:
        pass
    loop.answer(task, message)
