package train

import "golang.org/x/sys/cpu"

//go:noescape
func kern4x16(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func kern4x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func kern8x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func kern4x8(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func axpyFMA(a float32, x, y []float32)

// hasFMA reports whether the CPU and the OS support AVX2 and FMA (the
// kernels' instructions and the YMM state); golang.org/x/sys/cpu checks
// both.
var hasFMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// hasAVX512 reports whether kern4x32 can run: AVX-512 F on the CPU and
// the opmask and ZMM state enabled by the OS.
var hasAVX512 = hasFMA && cpu.X86.HasAVX512F

// sumRows16 needs n, rows ≥ 1 and AVX-512; see sumRows.
//
//go:noescape
func sumRows16(k int, y *float32, x *float32, offs *int32, coef *float32, n int, rows, ystride, xstride int)

// poolRow16 needs AVX-512 and c a positive multiple of 16; see reluPool.
//
//go:noescape
func poolRow16(in *float32, c, w, ow int, out *float32, arg *int32, q0 int)
