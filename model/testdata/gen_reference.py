#!/usr/bin/env python3
"""Writes the safetensors test vectors in this folder.

HuggingFace's `safetensors` package is not installable here (not packaged
for Debian, no PyPI), so the files are produced from the format's
specification with numpy, laid out exactly as the reference serializer
(safetensors/src/tensor.rs, `prepare`) lays them out: tensors sorted by
descending dtype alignment, then by name; data offsets in that order;
"__metadata__" first in the header; compact JSON with the fields dtype,
shape, data_offsets; the header padded with spaces to a multiple of 8.

The rust-*.safetensors files are byte vectors asserted verbatim by the
reference implementation's own unit tests (test_serialization,
test_serialization_forced_alignement, test_empty), so they are exactly what
the real serializer writes.

Run: /usr/bin/python3 gen_reference.py  (from this folder)
"""
import json
import struct

import numpy as np

# Dtype order of the reference's enum: higher sorts first when writing.
ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
         "I32", "U32", "F32", "F64", "I64", "U64"]


def save(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape, raw little-endian bytes)}"""
    items = sorted(tensors.items(), key=lambda kv: (-ORDER.index(kv[1][0]), kv[0]))
    header, data, off = {}, b"", 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def bf16(values):
    bits = np.array(values, dtype="<f4").view("<u4") >> 16
    return bits.astype("<u2").tobytes()


save("reference.safetensors", {
    "a": ("F32", (2, 3), np.arange(6, dtype="<f4").tobytes()),
    "b": ("F16", (2,), np.array([0.5, -2], dtype="<f2").tobytes()),
}, {"framework": "pt"})

save("dtypes.safetensors", {
    "a.f64": ("F64", (2, 2), np.array([1.5, -2.25, 1e-3, 1e300], dtype="<f8").tobytes()),
    "b.bf16": ("BF16", (3,), bf16([1.0, -0.5, 3.140625])),
    "c.f16": ("F16", (4,), np.array([0.5, -2, 2.0**-24, 65504], dtype="<f2").tobytes()),
    "d.f32": ("F32", (), np.array([7], dtype="<f4").tobytes()),
    "e.empty": ("F32", (0,), b""),
}, {"format": "pt", "note": "dtypes"})

RUST = {
    "rust-serialization.safetensors": [
        64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
        116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
        58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
        101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
        0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64],
    "rust-forced-alignment.safetensors": [
        72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
        121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
        91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
        115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
        32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
        160, 64],
    "rust-empty.safetensors": [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32],
    "rust-empty-metadata.safetensors": [
        40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
        95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
        116, 34, 125, 125, 32, 32, 32, 32, 32],
}
for path, b in RUST.items():
    with open(path, "wb") as f:
        f.write(bytes(b))
