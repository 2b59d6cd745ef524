//go:build !purego

#include "textflag.h"

// func transpose8AVX2(dst *float32, ldd int, src *float32, lds int, blocks int)
//
// For b in [0, blocks): reads the 8×8 block of src at rows 0..7, columns
// 8b..8b+7 (rows lds floats apart) and writes its transpose to dst rows
// 8b..8b+7, columns 0..7 (rows ldd floats apart). This packs eight rows of a
// transposed B into eight columns of a 16-wide panel.
//
// The transpose is the usual three stages: VUNPCKL/HPS interleave row pairs,
// VSHUFPS gathers four-element columns within 128-bit lanes, VPERM2F128
// joins the lanes.
TEXT ·transpose8AVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ ldd+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ lds+24(FP), R9
	SHLQ $2, R9
	MOVQ blocks+32(FP), CX
	TESTQ CX, CX
	JZ    done

	// R10 = 3*lds bytes, R11 = 5*lds, R12 = 7*lds for addressing rows.
	LEAQ (R9)(R9*2), R10
	LEAQ (R9)(R9*4), R11
	LEAQ (R10)(R9*4), R12
	// R13 = 3*ldd, R14 = 5*ldd, R15 = 7*ldd.
	LEAQ (R8)(R8*2), R13
	LEAQ (R8)(R8*4), R14
	LEAQ (R13)(R8*4), R15

loop:
	MOVQ    SI, AX
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R9*1), Y1
	VMOVUPS (AX)(R9*2), Y2
	VMOVUPS (AX)(R10*1), Y3
	LEAQ    (AX)(R9*4), BX
	VMOVUPS (BX), Y4
	VMOVUPS (AX)(R11*1), Y5
	VMOVUPS (BX)(R9*2), Y6
	VMOVUPS (AX)(R12*1), Y7

	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	VMOVUPS Y8, (DI)
	VMOVUPS Y9, (DI)(R8*1)
	VMOVUPS Y10, (DI)(R8*2)
	VMOVUPS Y11, (DI)(R13*1)
	LEAQ    (DI)(R8*4), BX
	VMOVUPS Y12, (BX)
	VMOVUPS Y13, (DI)(R14*1)
	VMOVUPS Y14, (BX)(R8*2)
	VMOVUPS Y15, (DI)(R15*1)

	ADDQ $32, SI
	LEAQ (DI)(R8*8), DI
	DECQ CX
	JNZ  loop

done:
	VZEROUPPER
	RET
