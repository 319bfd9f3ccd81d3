#include "textflag.h"

// func kern4x16(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// C[0:4, 0:16] += A[0:4, 0:k] · B[0:k, 0:16], row-major with strides in
// elements; each C value sums its k products in order, with FMA.
TEXT ·kern4x16(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $2, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $2, R9
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	SHLQ $2, R10

	LEAQ (SI)(R8*1), R11
	LEAQ (R11)(R8*1), R12
	LEAQ (R12)(R8*1), R13

	LEAQ (DX)(R10*1), R14
	LEAQ (R14)(R10*1), R15
	LEAQ (R15)(R10*1), BX

	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	VMOVUPS (R14), Y2
	VMOVUPS 32(R14), Y3
	VMOVUPS (R15), Y4
	VMOVUPS 32(R15), Y5
	VMOVUPS (BX), Y6
	VMOVUPS 32(BX), Y7

	TESTQ CX, CX
	JZ    store

loop:
	VMOVUPS      (DI), Y8
	VMOVUPS      32(DI), Y9
	VBROADCASTSS (SI), Y10
	VFMADD231PS  Y8, Y10, Y0
	VFMADD231PS  Y9, Y10, Y1
	VBROADCASTSS (R11), Y11
	VFMADD231PS  Y8, Y11, Y2
	VFMADD231PS  Y9, Y11, Y3
	VBROADCASTSS (R12), Y12
	VFMADD231PS  Y8, Y12, Y4
	VFMADD231PS  Y9, Y12, Y5
	VBROADCASTSS (R13), Y13
	VFMADD231PS  Y8, Y13, Y6
	VFMADD231PS  Y9, Y13, Y7
	ADDQ         $4, SI
	ADDQ         $4, R11
	ADDQ         $4, R12
	ADDQ         $4, R13
	ADDQ         R9, DI
	DECQ         CX
	JNZ          loop

store:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	VMOVUPS Y2, (R14)
	VMOVUPS Y3, 32(R14)
	VMOVUPS Y4, (R15)
	VMOVUPS Y5, 32(R15)
	VMOVUPS Y6, (BX)
	VMOVUPS Y7, 32(BX)
	VZEROUPPER
	RET

// func axpyFMA(a float32, x, y []float32)
//
// y[i] += a·x[i] for i < len(x), with FMA; len(y) ≥ len(x).
TEXT ·axpyFMA(SB), NOSPLIT, $0-56
	VBROADCASTSS a+0(FP), Y0
	MOVQ         x_base+8(FP), SI
	MOVQ         x_len+16(FP), CX
	MOVQ         y_base+32(FP), DI

loop32:
	CMPQ        CX, $32
	JL          loop8
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VMOVUPS     64(DI), Y3
	VMOVUPS     96(DI), Y4
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VFMADD231PS 64(SI), Y0, Y3
	VFMADD231PS 96(SI), Y0, Y4
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	VMOVUPS     Y3, 64(DI)
	VMOVUPS     Y4, 96(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         loop32

loop8:
	CMPQ        CX, $8
	JL          tail
	VMOVUPS     (DI), Y1
	VFMADD231PS (SI), Y0, Y1
	VMOVUPS     Y1, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         loop8

tail:
	TESTQ       CX, CX
	JZ          done
	VMOVSS      (DI), X1
	VFMADD231SS (SI), X0, X1
	VMOVSS      X1, (DI)
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         tail

done:
	VZEROUPPER
	RET

// func kern4x8(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// kern4x16 for an 8-column block.
TEXT ·kern4x8(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $2, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $2, R9
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	SHLQ $2, R10

	LEAQ (SI)(R8*1), R11
	LEAQ (R11)(R8*1), R12
	LEAQ (R12)(R8*1), R13

	LEAQ (DX)(R10*1), R14
	LEAQ (R14)(R10*1), R15
	LEAQ (R15)(R10*1), BX

	VMOVUPS (DX), Y0
	VMOVUPS (R14), Y2
	VMOVUPS (R15), Y4
	VMOVUPS (BX), Y6

	TESTQ CX, CX
	JZ    store8

loop8k:
	VMOVUPS      (DI), Y8
	VBROADCASTSS (SI), Y10
	VFMADD231PS  Y8, Y10, Y0
	VBROADCASTSS (R11), Y11
	VFMADD231PS  Y8, Y11, Y2
	VBROADCASTSS (R12), Y12
	VFMADD231PS  Y8, Y12, Y4
	VBROADCASTSS (R13), Y13
	VFMADD231PS  Y8, Y13, Y6
	ADDQ         $4, SI
	ADDQ         $4, R11
	ADDQ         $4, R12
	ADDQ         $4, R13
	ADDQ         R9, DI
	DECQ         CX
	JNZ          loop8k

store8:
	VMOVUPS Y0, (DX)
	VMOVUPS Y2, (R14)
	VMOVUPS Y4, (R15)
	VMOVUPS Y6, (BX)
	VZEROUPPER
	RET

// func kern4x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// kern4x16 for a 32-column block on AVX-512: the same products in the
// same order per value, so the same results.
TEXT ·kern4x32(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $2, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $2, R9
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	SHLQ $2, R10

	LEAQ (SI)(R8*1), R11
	LEAQ (R11)(R8*1), R12
	LEAQ (R12)(R8*1), R13

	LEAQ (DX)(R10*1), R14
	LEAQ (R14)(R10*1), R15
	LEAQ (R15)(R10*1), BX

	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS (R14), Z2
	VMOVUPS 64(R14), Z3
	VMOVUPS (R15), Z4
	VMOVUPS 64(R15), Z5
	VMOVUPS (BX), Z6
	VMOVUPS 64(BX), Z7

	TESTQ CX, CX
	JZ    store32

loop32k:
	VMOVUPS      (DI), Z8
	VMOVUPS      64(DI), Z9
	VBROADCASTSS (SI), Z10
	VFMADD231PS  Z8, Z10, Z0
	VFMADD231PS  Z9, Z10, Z1
	VBROADCASTSS (R11), Z11
	VFMADD231PS  Z8, Z11, Z2
	VFMADD231PS  Z9, Z11, Z3
	VBROADCASTSS (R12), Z12
	VFMADD231PS  Z8, Z12, Z4
	VFMADD231PS  Z9, Z12, Z5
	VBROADCASTSS (R13), Z13
	VFMADD231PS  Z8, Z13, Z6
	VFMADD231PS  Z9, Z13, Z7
	ADDQ         $4, SI
	ADDQ         $4, R11
	ADDQ         $4, R12
	ADDQ         $4, R13
	ADDQ         R9, DI
	DECQ         CX
	JNZ          loop32k

store32:
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, (R14)
	VMOVUPS Z3, 64(R14)
	VMOVUPS Z4, (R15)
	VMOVUPS Z5, 64(R15)
	VMOVUPS Z6, (BX)
	VMOVUPS Z7, 64(BX)
	VZEROUPPER
	RET

// func kern8x32(k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
//
// kern4x32 for 8 rows: 16 accumulators, each B load used 8 times. The
// same products in the same order per value, so the same results.
TEXT ·kern8x32(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $2, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $2, R9
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	SHLQ $2, R10

	LEAQ (R8)(R8*2), AX   // 3·lda
	LEAQ (SI)(R8*4), R11  // row 4 of A
	LEAQ (R10)(R10*2), BX // 3·ldc
	LEAQ (DX)(R10*4), R12 // row 4 of C

	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS (DX)(R10*1), Z2
	VMOVUPS 64(DX)(R10*1), Z3
	VMOVUPS (DX)(R10*2), Z4
	VMOVUPS 64(DX)(R10*2), Z5
	VMOVUPS (DX)(BX*1), Z6
	VMOVUPS 64(DX)(BX*1), Z7
	VMOVUPS (R12), Z16
	VMOVUPS 64(R12), Z17
	VMOVUPS (R12)(R10*1), Z18
	VMOVUPS 64(R12)(R10*1), Z19
	VMOVUPS (R12)(R10*2), Z20
	VMOVUPS 64(R12)(R10*2), Z21
	VMOVUPS (R12)(BX*1), Z22
	VMOVUPS 64(R12)(BX*1), Z23

	TESTQ CX, CX
	JZ    store8x32

loop8x32:
	VMOVUPS      (DI), Z8
	VMOVUPS      64(DI), Z9
	VBROADCASTSS (SI), Z10
	VBROADCASTSS (SI)(R8*1), Z11
	VBROADCASTSS (SI)(R8*2), Z12
	VBROADCASTSS (SI)(AX*1), Z13
	VFMADD231PS  Z8, Z10, Z0
	VFMADD231PS  Z9, Z10, Z1
	VFMADD231PS  Z8, Z11, Z2
	VFMADD231PS  Z9, Z11, Z3
	VFMADD231PS  Z8, Z12, Z4
	VFMADD231PS  Z9, Z12, Z5
	VFMADD231PS  Z8, Z13, Z6
	VFMADD231PS  Z9, Z13, Z7
	VBROADCASTSS (R11), Z24
	VBROADCASTSS (R11)(R8*1), Z25
	VBROADCASTSS (R11)(R8*2), Z26
	VBROADCASTSS (R11)(AX*1), Z27
	VFMADD231PS  Z8, Z24, Z16
	VFMADD231PS  Z9, Z24, Z17
	VFMADD231PS  Z8, Z25, Z18
	VFMADD231PS  Z9, Z25, Z19
	VFMADD231PS  Z8, Z26, Z20
	VFMADD231PS  Z9, Z26, Z21
	VFMADD231PS  Z8, Z27, Z22
	VFMADD231PS  Z9, Z27, Z23
	ADDQ         $4, SI
	ADDQ         $4, R11
	ADDQ         R9, DI
	DECQ         CX
	JNZ          loop8x32

store8x32:
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, (DX)(R10*1)
	VMOVUPS Z3, 64(DX)(R10*1)
	VMOVUPS Z4, (DX)(R10*2)
	VMOVUPS Z5, 64(DX)(R10*2)
	VMOVUPS Z6, (DX)(BX*1)
	VMOVUPS Z7, 64(DX)(BX*1)
	VMOVUPS Z16, (R12)
	VMOVUPS Z17, 64(R12)
	VMOVUPS Z18, (R12)(R10*1)
	VMOVUPS Z19, 64(R12)(R10*1)
	VMOVUPS Z20, (R12)(R10*2)
	VMOVUPS Z21, 64(R12)(R10*2)
	VMOVUPS Z22, (R12)(BX*1)
	VMOVUPS Z23, 64(R12)(BX*1)
	VZEROUPPER
	RET

// func sumRows16(k int, y *float32, x *float32, offs *int32, coef *float32, n int, rows, ystride, xstride int)
//
// For r < rows: y[r·ystride+i] += Σ_{j<n} coef[j]·x[r·xstride+offs[j]+i]
// for i < k, k a multiple of 16, on AVX-512: the products of each y value
// are added in order of j, with FMA, as n calls of axpyFMA would; y stays
// in registers over the j loop.
TEXT ·sumRows16(SB), NOSPLIT, $0-72
	MOVQ y+8(FP), R14
	MOVQ x+16(FP), R15
	MOVQ offs+24(FP), R8
	MOVQ coef+32(FP), R9
	MOVQ n+40(FP), R10
	MOVQ rows+48(FP), R11
	MOVQ ystride+56(FP), R12
	SHLQ $2, R12
	MOVQ xstride+64(FP), R13
	SHLQ $2, R13

nextrow:
	MOVQ k+0(FP), CX
	MOVQ R14, DX
	MOVQ R15, SI

	// Blocks of 160 values, 10 accumulators: enough independent sums to
	// hide the FMA latency (a layer of 32 channels has rows of 160).
chunk160:
	CMPQ CX, $160
	JLT  chunk64
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS 128(DX), Z2
	VMOVUPS 192(DX), Z3
	VMOVUPS 256(DX), Z5
	VMOVUPS 320(DX), Z6
	VMOVUPS 384(DX), Z7
	VMOVUPS 448(DX), Z8
	VMOVUPS 512(DX), Z9
	VMOVUPS 576(DX), Z11
	XORQ    AX, AX

loop160:
	MOVLQSX      (R8)(AX*4), BX
	LEAQ         (SI)(BX*4), BX
	VBROADCASTSS (R9)(AX*4), Z4
	VFMADD231PS  (BX), Z4, Z0
	VFMADD231PS  64(BX), Z4, Z1
	VFMADD231PS  128(BX), Z4, Z2
	VFMADD231PS  192(BX), Z4, Z3
	VFMADD231PS  256(BX), Z4, Z5
	VFMADD231PS  320(BX), Z4, Z6
	VFMADD231PS  384(BX), Z4, Z7
	VFMADD231PS  448(BX), Z4, Z8
	VFMADD231PS  512(BX), Z4, Z9
	VFMADD231PS  576(BX), Z4, Z11
	INCQ         AX
	CMPQ         AX, R10
	JLT          loop160

	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	VMOVUPS Z5, 256(DX)
	VMOVUPS Z6, 320(DX)
	VMOVUPS Z7, 384(DX)
	VMOVUPS Z8, 448(DX)
	VMOVUPS Z9, 512(DX)
	VMOVUPS Z11, 576(DX)
	ADDQ    $640, DX
	ADDQ    $640, SI
	SUBQ    $160, CX
	JMP     chunk160

chunk64:
	CMPQ CX, $64
	JLT  chunk16
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS 128(DX), Z2
	VMOVUPS 192(DX), Z3
	XORQ    AX, AX

loop64:
	MOVLQSX      (R8)(AX*4), BX
	LEAQ         (SI)(BX*4), BX
	VBROADCASTSS (R9)(AX*4), Z4
	VFMADD231PS  (BX), Z4, Z0
	VFMADD231PS  64(BX), Z4, Z1
	VFMADD231PS  128(BX), Z4, Z2
	VFMADD231PS  192(BX), Z4, Z3
	INCQ         AX
	CMPQ         AX, R10
	JLT          loop64

	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	ADDQ    $256, DX
	ADDQ    $256, SI
	SUBQ    $64, CX
	JMP     chunk64

chunk16:
	CMPQ CX, $16
	JLT  done16
	VMOVUPS (DX), Z0
	XORQ    AX, AX

loop16:
	MOVLQSX      (R8)(AX*4), BX
	VBROADCASTSS (R9)(AX*4), Z4
	VFMADD231PS  (SI)(BX*4), Z4, Z0
	INCQ         AX
	CMPQ         AX, R10
	JLT          loop16

	VMOVUPS Z0, (DX)
	ADDQ    $64, DX
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     chunk16

done16:
	ADDQ R12, R14
	ADDQ R13, R15
	DECQ R11
	JNZ  nextrow
	VZEROUPPER
	RET

// func poolRow16(in *float32, c, w, ow int, out *float32, arg *int32, q0 int)
//
// ReLU and 2×2 max-pooling of one output row on AVX-512, c a multiple of
// 16: in points at input row 2y of an [h, w, c] map, out and arg at the
// output row's ow·c values; q0 = 2y·w. Each output is the largest of the
// window's four ReLU values, compared as int32 bits (ReLU'd floats order
// as integers); arg the position y·w+x of the first such, in the order
// (0,0), (0,1), (1,0), (1,1), as reluPool does.
TEXT ·poolRow16(SB), NOSPLIT, $0-56
	MOVQ in+0(FP), SI
	MOVQ c+8(FP), CX
	MOVQ w+16(FP), R9
	MOVQ ow+24(FP), DX
	MOVQ out+32(FP), DI
	MOVQ arg+40(FP), R10
	MOVQ q0+48(FP), AX

	MOVQ CX, R8
	SHLQ $2, R8            // c in bytes
	IMULQ R8, R9           // w·c in bytes
	LEAQ (R8)(R9*1), R13   // (w+1)·c in bytes

	VPXORD       Z31, Z31, Z31
	VPBROADCASTD AX, Z20     // q00
	MOVQ         $1, BX
	VPBROADCASTD BX, Z24
	MOVQ         w+16(FP), BX
	VPBROADCASTD BX, Z25
	INCQ         BX
	VPBROADCASTD BX, Z26
	MOVQ         $2, BX
	VPBROADCASTD BX, Z27

	TESTQ DX, DX
	JZ    donepool

xloop:
	VPADDD Z24, Z20, Z21     // q01
	VPADDD Z25, Z20, Z22     // q10
	VPADDD Z26, Z20, Z23     // q11
	MOVQ   SI, R12
	MOVQ   CX, R11

chloop:
	VMOVDQU32 (R12), Z0
	VPMAXSD   Z31, Z0, Z0
	VMOVDQA32 Z20, Z4

	VMOVDQU32 (R12)(R8*1), Z1
	VPMAXSD   Z31, Z1, Z1
	VPCMPGTD  Z0, Z1, K1
	VMOVDQA32 Z1, K1, Z0
	VMOVDQA32 Z21, K1, Z4

	VMOVDQU32 (R12)(R9*1), Z1
	VPMAXSD   Z31, Z1, Z1
	VPCMPGTD  Z0, Z1, K1
	VMOVDQA32 Z1, K1, Z0
	VMOVDQA32 Z22, K1, Z4

	VMOVDQU32 (R12)(R13*1), Z1
	VPMAXSD   Z31, Z1, Z1
	VPCMPGTD  Z0, Z1, K1
	VMOVDQA32 Z1, K1, Z0
	VMOVDQA32 Z23, K1, Z4

	VMOVDQU32 Z0, (DI)
	VMOVDQU32 Z4, (R10)
	ADDQ      $64, R12
	ADDQ      $64, DI
	ADDQ      $64, R10
	SUBQ      $16, R11
	JNZ       chloop

	LEAQ   (SI)(R8*2), SI
	VPADDD Z27, Z20, Z20
	DECQ   DX
	JNZ    xloop

donepool:
	VZEROUPPER
	RET
