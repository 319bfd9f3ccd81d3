// Package model holds Weights, the ordered, named float32 tensors that move
// between the coordinator and the sites, with the safetensors codec that
// reads and writes them, the vector math aggregation needs (delta, scale,
// axpy, norm) and the chunking with a SHA-256 over the whole that carries
// them over the wire.
package model
