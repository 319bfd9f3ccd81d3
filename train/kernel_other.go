//go:build !amd64

package train

var hasFMA, hasAVX512 = false, false

func kern4x16(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int) {
	panic("train: kern4x16 without amd64")
}

func kern4x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int) {
	panic("train: kern4x32 without amd64")
}

func kern4x8(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int) {
	panic("train: kern4x8 without amd64")
}

func axpyFMA(a float32, x, y []float32) { panic("train: axpyFMA without amd64") }

func kern8x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int) {
	panic("train: kern8x32 without amd64")
}

func sumRows16(k int, y *float32, x *float32, offs *int32, coef *float32, n int, rows, ystride, xstride int) {
	panic("train: sumRows16 without amd64")
}

func poolRow16(in *float32, c, w, ow int, out *float32, arg *int32, q0 int) {
	panic("train: poolRow16 without amd64")
}
