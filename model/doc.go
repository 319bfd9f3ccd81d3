// Package model holds [Weights], the ordered, named float32 tensors that
// move between the coordinator and the sites; the safetensors codec that
// reads and writes them compatibly with HuggingFace's safetensors (what
// PyTorch saves loads here, F16, BF16 and F64 converted to float32, and
// what is written here PyTorch loads); the vector math aggregation needs
// (difference, axpy, scale, dot, norm, finite checks); and [Chunks],
// [ChunkReader] and [ChunkWriter], which carry encoded weights over any
// transport as ~1 MiB chunks with a SHA-256 over the whole.
package model
