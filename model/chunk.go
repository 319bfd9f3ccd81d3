package model

import (
	"iter"
)

// ChunkSize is the size of the chunks weights move over the wire in: big
// enough that per-message costs vanish, small enough to stay well under
// gRPC's default 4 MiB message limit.
const ChunkSize = 1 << 20

// CollectAfterBytes is the model size from which a process collects its
// garbage and returns the memory to the system once it is done with a
// model (a site agent after a task), so that the next one does not stack
// on it: below it, a forced collection costs more
// than it frees.
const CollectAfterBytes = 64 << 20

// MaxAssembly bounds the size a [ChunkReader] accepts (1 TiB): beyond it
// the announced size is surely an error.
const MaxAssembly = 1 << 40

// Chunks yields data in consecutive chunks of size bytes (the last one
// shorter), each with its offset; size ≤ 0 means [ChunkSize]. Empty data
// yields nothing. The chunks share data's memory.
func Chunks(data []byte, size int) iter.Seq2[int64, []byte] {
	if size <= 0 {
		size = ChunkSize
	}
	return func(yield func(int64, []byte) bool) {
		for off := 0; off < len(data); off += size {
			if !yield(int64(off), data[off:min(off+size, len(data))]) {
				return
			}
		}
	}
}
