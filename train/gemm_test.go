package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// withKernels runs fn with the assembly kernels on and, where the CPU has
// them, off (gonum's BLAS), restoring the setting afterwards.
func withKernels(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	fma, avx512 := hasFMA, hasAVX512
	defer func() { hasFMA, hasAVX512 = fma, avx512 }()
	for _, k := range []struct {
		name        string
		fma, avx512 bool
	}{{"gonum", false, false}, {"avx2", true, false}, {"avx512", true, true}} {
		if k.fma && !fma || k.avx512 && !avx512 {
			continue
		}
		hasFMA, hasAVX512 = k.fma, k.avx512
		t.Run(k.name, fn)
	}
}

// TestKernelsAgree checks that the AVX-512 and AVX2 paths give the same
// bits: the same products summed in the same order.
func TestKernelsAgree(t *testing.T) {
	if !hasAVX512 {
		t.Skip("no AVX-512 here")
	}
	defer func() { hasAVX512 = true }()
	r := rand.New(rand.NewPCG(5, 6))
	m, n, k := 12, 200, 97
	a, b, c := randVec(r, m*k), randVec(r, k*n), randVec(r, m*n)
	got := map[bool][]float32{}
	for _, on := range []bool{false, true} {
		hasAVX512 = on
		got[on] = append([]float32(nil), c...)
		mulAdd(m, n, k, a, k, b, n, got[on], n)
	}
	if !slices.Equal(got[false], got[true]) {
		t.Error("AVX-512 and AVX2 products differ")
	}
}

// TestMulAdd compares mulAdd, mulAddPar and mulSetPar with a float64
// product over shapes that exercise the 4×16 blocks, both edges and blocks
// of k (the last), with leading dimensions wider than the matrices.
func TestMulAdd(t *testing.T) {
	withKernels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, sz := range [][3]int{{1, 1, 1}, {4, 16, 1}, {5, 17, 3}, {8, 32, 0}, {7, 33, 25}, {64, 784, 25}, {13, 200, 130}, {64, 1568, 80}, {130, 32, 300}, {512, 20, 110}, {9, 24, 7}, {12, 200, 784}, {9, 100, 3000}} {
			m, n, k := sz[0], sz[1], sz[2]
			lda, ldb, ldc := k+3, n+5, n+2
			a, b, c := randVec(r, m*lda), randVec(r, max(1, k)*ldb), randVec(r, m*ldc)
			if m >= 8 {
				clear(a[4*lda : 8*lda]) // a block of zero rows, which mulAdd skips
			}
			want := make([]float64, len(c))
			for i := range m {
				for j := range n {
					s := float64(c[i*ldc+j])
					for l := range k {
						s += float64(a[i*lda+l]) * float64(b[l*ldb+j])
					}
					want[i*ldc+j] = s
				}
			}
			for _, f := range []struct {
				name string
				fn   func(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int)
				set  bool // C = A·B: the initial C does not count
			}{{"mulAdd", mulAdd, false}, {"mulAddPar", mulAddPar, false}, {"mulSetPar", mulSetPar, true}} {
				got := append([]float32(nil), c...)
				f.fn(m, n, k, a, lda, b, ldb, got, ldc)
				for i := range m {
					for j := range ldc {
						w := want[i*ldc+j]
						if f.set {
							w -= float64(c[i*ldc+j])
						}
						if j >= n {
							w = float64(c[i*ldc+j]) // outside the matrix: untouched
						}
						if d := math.Abs(float64(got[i*ldc+j]) - w); d > 1e-4*(1+math.Abs(w))*math.Sqrt(float64(k+1)) {
							t.Fatalf("%s %d×%d×%d: C[%d,%d] = %v, want %v", f.name, m, n, k, i, j, got[i*ldc+j], w)
						}
					}
				}
			}
		}
	})
}

func TestAxpy(t *testing.T) {
	withKernels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, n := range []int{0, 1, 7, 8, 31, 32, 33, 200, 513} {
			x, y := randVec(r, n), randVec(r, n+1)
			got := append([]float32(nil), y...)
			axpy(1.5, x, got[:n])
			for i := range n {
				if w := float64(y[i]) + 1.5*float64(x[i]); math.Abs(float64(got[i])-w) > 1e-6*(1+math.Abs(w)) {
					t.Fatalf("n=%d: y[%d] = %v, want %v", n, i, got[i], w)
				}
			}
			if got[n] != y[n] {
				t.Fatalf("n=%d: wrote past the end", n)
			}
		}
	})
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// BenchmarkMulAdd times the CNN's second convolution for a group of 4
// samples (weight [64, 800] · patches [800, 784]) on each kernel path,
// in GFLOP/s.
func BenchmarkMulAdd(b *testing.B) {
	fma, avx512 := hasFMA, hasAVX512
	defer func() { hasFMA, hasAVX512 = fma, avx512 }()
	r := rand.New(rand.NewPCG(7, 8))
	m, n, k := 64, 784, 800
	x, y, c := randVec(r, m*k), randVec(r, k*n), make([]float32, m*n)
	for _, kc := range []struct {
		name        string
		fma, avx512 bool
	}{{"gonum", false, false}, {"avx2", true, false}, {"avx512", true, true}} {
		if kc.fma && !fma || kc.avx512 && !avx512 {
			continue
		}
		b.Run(kc.name, func(b *testing.B) {
			hasFMA, hasAVX512 = kc.fma, kc.avx512
			for b.Loop() {
				mulAdd(m, n, k, x, k, y, n, c, n)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestSumRows compares sumRows with a float64 sum over lengths that
// exercise its 64- and 16-value blocks and the rest, with repeated and
// overlapping rows, and checks that on FMA it gives the bits of the axpy
// calls it stands for.
func TestSumRows(t *testing.T) {
	withKernels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		x := randVec(r, 1000)
		x2 := append(slices.Clone(x), randVec(r, 60)...) // room for 3 rows 30 apart
		for _, tc := range []struct {
			k    int
			offs []int32
		}{
			{1, []int32{3}},
			{5, []int32{0, 5, 10}},
			{16, []int32{1, 2}},
			{25, []int32{100, 0, 25, 100}},
			{80, []int32{7}},
			{160, []int32{0, 32, 64, 96, 640, 3, 839}},
			{200, []int32{700, 0}},
			{64, nil},
		} {
			coef := randVec(r, len(tc.offs))
			y := randVec(r, tc.k)
			want := make([]float64, tc.k)
			for i := range want {
				want[i] = float64(y[i])
				for j, o := range tc.offs {
					want[i] += float64(coef[j]) * float64(x[int(o)+i])
				}
			}
			seq := append([]float32(nil), y...)
			for j, o := range tc.offs {
				axpy(coef[j], x[o:int(o)+tc.k], seq)
			}
			sumRows(y, x, tc.offs, coef)
			for i, w := range want {
				if math.Abs(float64(y[i])-w) > 1e-4*(1+math.Abs(w)) {
					t.Fatalf("k=%d offs %v: sumRows y[%d] = %g, want %g", tc.k, tc.offs, i, y[i], w)
				}
			}
			if hasFMA && !slices.Equal(y, seq) {
				t.Errorf("k=%d offs %v: sumRows differs from %d axpy calls in the last bits", tc.k, tc.offs, len(tc.offs))
			}
			if len(tc.offs) == 0 || tc.k > 200 {
				continue
			}
			// sumRowsN over 3 rows of y and x, 250 and 30 apart, as 3
			// calls of sumRows.
			yN := randVec(r, 2*250+tc.k)
			want32 := append([]float32(nil), yN...)
			for row := range 3 {
				sumRows(want32[row*250:row*250+tc.k], x2[row*30:], tc.offs, coef)
			}
			sumRowsN(tc.k, 3, yN, 250, x2, 30, tc.offs, coef)
			if !slices.Equal(yN, want32) {
				t.Errorf("k=%d offs %v: sumRowsN over 3 rows differs from 3 sumRows calls", tc.k, tc.offs)
			}
		}
	})
}

// TestReluPoolKernels checks that poolRow16 gives reluPool's values and
// positions bit for bit, ties (zeros, repeated values) included.
func TestReluPoolKernels(t *testing.T) {
	if !hasAVX512 {
		t.Skip("no AVX-512 here")
	}
	defer func() { hasAVX512 = true }()
	r := rand.New(rand.NewPCG(9, 10))
	for _, sz := range [][3]int{{16, 2, 2}, {32, 28, 28}, {64, 14, 14}, {16, 5, 7}, {48, 3, 9}} {
		c, h, w := sz[0], sz[1], sz[2]
		in := randVec(r, h*w*c)
		for i := range in {
			switch r.IntN(4) {
			case 0:
				in[i] = 0
			case 1:
				in[i] = float32(r.IntN(3)) // ties
			}
		}
		n := h / 2 * (w / 2) * c
		var outs [2][]float32
		var args [2][]int32
		for k, on := range []bool{false, true} {
			hasAVX512 = on
			outs[k], args[k] = make([]float32, n), make([]int32, n)
			reluPool(in, c, h, w, outs[k], args[k])
		}
		if !slices.Equal(outs[0], outs[1]) || !slices.Equal(args[0], args[1]) {
			t.Errorf("c=%d h=%d w=%d: poolRow16 differs from the Go loop", c, h, w)
		}
		if slices.Max(outs[0]) <= 0 {
			t.Errorf("c=%d h=%d w=%d: all outputs 0, the comparison shows nothing", c, h, w)
		}
	}
}
