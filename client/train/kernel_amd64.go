package train

//go:noescape
func kern4x16(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func kern4x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func kern4x8(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func axpyFMA(a float32, x, y []float32)

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

func xgetbv0() (eax uint32)

// hasFMA reports whether the CPU and the OS support AVX2 and FMA (the
// kernels' instructions and the YMM state).
var hasFMA = func() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if c1&fma == 0 || c1&osxsave == 0 || c1&avx == 0 {
		return false
	}
	if xgetbv0()&6 != 6 { // XMM and YMM state enabled by the OS
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<5) != 0 // AVX2
}()

// hasAVX512 reports whether kern4x32 can run: AVX-512 F on the CPU and
// the opmask and ZMM state enabled by the OS.
var hasAVX512 = func() bool {
	if !hasFMA {
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<16) != 0 && xgetbv0()&0xe6 == 0xe6
}()
