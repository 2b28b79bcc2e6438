#include "textflag.h"

// func prefetch(p unsafe.Pointer, n uintptr)
// PREFETCHT0 of every cache line of [p, p+n), n > 0. A prefetch never
// faults and does not hold up the instructions after it.
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), BX
	LEAQ -1(AX)(BX*1), CX
loop:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	CMPQ AX, CX
	JLS  loop
	PREFETCHT0 (CX)
	RET
