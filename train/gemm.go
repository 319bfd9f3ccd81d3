package train

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// The trainers' matrix products. On amd64 with AVX2 and FMA they run on
// kern4x16 and kern4x8, register-blocked kernels (kern8x32 and kern4x32 where the
// CPU has AVX-512, with the same products in the same order), and axpyFMA; elsewhere on
// gonum's BLAS. Each output value sums its products in index order
// whatever the number of cores, so results do not depend on it (they do
// differ in the last bits between the two code paths: FMA rounds once).

// mulAdd sets C += A·B for row-major A [m, k], B [k, n] and C [m, n] with
// leading dimensions lda, ldb and ldc.
func mulAdd(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m == 0 || n == 0 || k == 0 {
		return
	}
	checkMat("A", m, k, a, lda)
	checkMat("B", k, n, b, ldb)
	checkMat("C", m, n, c, ldc)
	if !hasFMA {
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
			blas32.General{Rows: m, Cols: k, Stride: lda, Data: a},
			blas32.General{Rows: k, Cols: n, Stride: ldb, Data: b}, 1,
			blas32.General{Rows: m, Cols: n, Stride: ldc, Data: c})
		return
	}
	// Where B is larger than L2 (1 MB), over blocks of kBlock products, so that
	// the rows of B a block reads stay in cache while all of A's rows pass
	// over them. The kernels add to C in order, so each value still sums
	// its products in index order: the same bits as one pass.
	kBlock := k
	if k*n > 1<<18 { // 1 MB
		kBlock = 128
	}
	for k0 := 0; k0 < k; k0 += kBlock {
		kb := min(kBlock, k-k0)
		mulAddBlock(m, n, kb, a[k0:], lda, b[k0*ldb:], ldb, c, ldc)
	}
}

// mulAddBlock is mulAdd on the kernels for one block of k.
func mulAddBlock(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	m4, n16, n8 := m&^3, n&^15, n&^7
	// rest runs the 4 rows from i over the columns from j on that the
	// 32-column kernels left.
	rest := func(i, j int) {
		for ; j < n16; j += 16 {
			kern4x16(k, &a[i*lda], lda, &b[j], ldb, &c[i*ldc+j], ldc)
		}
		if n16 < n8 {
			kern4x8(k, &a[i*lda], lda, &b[n16], ldb, &c[i*ldc+n16], ldc)
		}
	}
	for i := 0; i < m4; {
		if zeroRows(a[i*lda:], lda, k) {
			i += 4
			continue // adds nothing: rows of zeros, as ReLU and images leave
		}
		j := 0
		if hasAVX512 && i+8 <= m4 && !zeroRows(a[(i+4)*lda:], lda, k) {
			// 8 rows at once: each load of B serves twice as many products.
			for ; j+32 <= n; j += 32 {
				kern8x32(k, &a[i*lda], lda, &b[j], ldb, &c[i*ldc+j], ldc)
			}
			rest(i, j)
			rest(i+4, j)
			i += 8
			continue
		}
		if hasAVX512 {
			for ; j+32 <= n; j += 32 {
				kern4x32(k, &a[i*lda], lda, &b[j], ldb, &c[i*ldc+j], ldc)
			}
		}
		rest(i, j)
		i += 4
	}
	// The edges: the last n mod 8 columns, then the last m mod 4 rows.
	if n8 < n {
		for i := 0; i < m4; i++ {
			edge(a[i*lda:i*lda+k], b, ldb, c[i*ldc:i*ldc+n], n8)
		}
	}
	for i := m4; i < m; i++ {
		edge(a[i*lda:i*lda+k], b, ldb, c[i*ldc:i*ldc+n], 0)
	}
}

// zeroRows reports whether the 4 rows of k values, lda apart, at the
// start of a are all 0.
func zeroRows(a []float32, lda, k int) bool {
	for r := range 4 {
		for _, v := range a[r*lda : r*lda+k] {
			if v != 0 {
				return false
			}
		}
	}
	return true
}

// edge adds row·B to crow's columns from j0 on, product by product in
// order, as the kernel does.
func edge(row, b []float32, ldb int, crow []float32, j0 int) {
	n := len(crow)
	for l, v := range row {
		axpyFMA(v, b[l*ldb+j0:l*ldb+n], crow[j0:n])
	}
}

// mulAddPar is mulAdd split over the cores, by blocks of 64 columns of C
// or, when C is narrow, of 32 rows: each value is still computed by one
// goroutine in the same order, so the result does not depend on the
// number of cores.
func mulAddPar(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	mulPar(m, n, k, a, lda, b, ldb, c, ldc, false)
}

// mulSetPar sets C = A·B, as mulAddPar from a C of zeros: each block of C
// is cleared just before the product that fills it, while it is in cache.
func mulSetPar(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	mulPar(m, n, k, a, lda, b, ldb, c, ldc, true)
}

func mulPar(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, set bool) {
	const cblk, rblk = 64, 32 // rblk is a multiple of the kernel's 4 rows
	run := func(m, n int, a, b, c []float32) {
		if set {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		mulAdd(m, n, k, a, lda, b, ldb, c, ldc)
	}
	if m == 0 || n == 0 {
		return
	}
	checkMat("C", m, n, c, ldc)
	if m*n*k < 1<<20 {
		run(m, n, a, b, c)
		return
	}
	if cols := (n + cblk - 1) / cblk; cols >= 4 || cols >= (m+rblk-1)/rblk {
		parallel(cols, func(i int) {
			j0, j1 := i*cblk, min((i+1)*cblk, n)
			run(m, j1-j0, a, b[j0:], c[j0:])
		})
		return
	}
	parallel((m+rblk-1)/rblk, func(i int) {
		i0, i1 := i*rblk, min((i+1)*rblk, m)
		run(i1-i0, n, a[i0*lda:], b, c[i0*ldc:])
	})
}

// checkMat panics, naming the matrix, when data cannot hold a rows×cols
// matrix with leading dimension ld: a bug in the caller, never input.
func checkMat(name string, rows, cols int, data []float32, ld int) {
	if ld < cols || len(data) < (rows-1)*ld+cols {
		panic(fmt.Sprintf("train: matrix %s %d×%d with stride %d needs %d values, has %d", name, rows, cols, ld, (rows-1)*ld+cols, len(data)))
	}
}

// transposeInto writes the cols×rows transpose of the rows×cols matrix m
// into out.
func transposeInto(out, m []float32, rows, cols int) {
	const blk = 32
	for r0 := 0; r0 < rows; r0 += blk {
		for c0 := 0; c0 < cols; c0 += blk {
			for r := r0; r < min(r0+blk, rows); r++ {
				for c := c0; c < min(c0+blk, cols); c++ {
					out[c*rows+r] = m[r*cols+c]
				}
			}
		}
	}
}

// sumRows sets y[i] += Σ_j coef[j]·x[offs[j]+i] for i < len(y), adding
// each value's products in order of j as len(offs) calls of axpy would:
// a sum of scaled rows of x picked by offset, with y kept in registers
// over the rows where AVX-512 allows.
func sumRows(y, x []float32, offs []int32, coef []float32) {
	sumRowsN(len(y), 1, y, 0, x, 0, offs, coef)
}

// sumRowsN is rows calls of sumRows on k values: call r on y[r·ystride:]
// and x[r·xstride:], in one pass.
func sumRowsN(k, rows int, y []float32, ystride int, x []float32, xstride int, offs []int32, coef []float32) {
	n := len(offs)
	if n == 0 || k == 0 || rows == 0 {
		return
	}
	coef = coef[:n]
	_ = y[(rows-1)*ystride+k-1]
	xlen := len(x) - (rows-1)*xstride
	for _, o := range offs {
		if o < 0 || int(o)+k > xlen {
			panic(fmt.Sprintf("train: sumRows offset %d of %d values past the %d of x", o, k, xlen))
		}
	}
	k16 := 0
	if hasAVX512 {
		k16 = k &^ 15
		if k16 > 0 {
			sumRows16(k16, &y[0], &x[0], &offs[0], &coef[0], n, rows, ystride, xstride)
		}
	}
	for r := 0; r < rows; r++ {
		sumRowsRest(k16, y[r*ystride:r*ystride+k], x[r*xstride:], offs, coef)
	}
}

// sumRowsRest is sumRows for y's values from k16 on, where sumRows16 left
// off.
func sumRowsRest(k16 int, y, x []float32, offs []int32, coef []float32) {
	k := len(y)
	if k16 == k {
		return
	}
	if hasAVX512 && k16 > 0 {
		// The last values as the end of a 16-value block: its first
		// 16−rest values are sums nobody reads.
		rest := k - k16
		var tail [16]float32
		copy(tail[16-rest:], y[k16:])
		sumRows16(16, &tail[0], &x[k-16], &offs[0], &coef[0], len(offs), 1, 0, 0)
		copy(y[k16:], tail[16-rest:])
		return
	}
	if hasFMA {
		for j, o := range offs {
			axpyFMA(coef[j], x[int(o)+k16:int(o)+k], y[k16:])
		}
		return
	}
	rest := y[k16:]
	for j, o := range offs {
		a, xs := coef[j], x[int(o)+k16:int(o)+k]
		for i, v := range xs {
			rest[i] += a * v
		}
	}
}
