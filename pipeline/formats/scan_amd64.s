#include "textflag.h"

DATA quoteBytes<>+0(SB)/8, $0x2222222222222222
DATA quoteBytes<>+8(SB)/8, $0x2222222222222222
GLOBL quoteBytes<>(SB), RODATA|NOPTR, $16
DATA backslashBytes<>+0(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA backslashBytes<>+8(SB)/8, $0x5c5c5c5c5c5c5c5c
GLOBL backslashBytes<>(SB), RODATA|NOPTR, $16
DATA caseBits<>+0(SB)/8, $0x2020202020202020
DATA caseBits<>+8(SB)/8, $0x2020202020202020
GLOBL caseBits<>(SB), RODATA|NOPTR, $16
DATA openBytes<>+0(SB)/8, $0x7b7b7b7b7b7b7b7b
DATA openBytes<>+8(SB)/8, $0x7b7b7b7b7b7b7b7b
GLOBL openBytes<>(SB), RODATA|NOPTR, $16
DATA closeBytes<>+0(SB)/8, $0x7d7d7d7d7d7d7d7d
DATA closeBytes<>+8(SB)/8, $0x7d7d7d7d7d7d7d7d
GLOBL closeBytes<>(SB), RODATA|NOPTR, $16

// func blockMasks(p *[64]byte) (quotes, backslashes, brackets uint64)
//
// SSE2 (every amd64): sixteen bytes per compare, bit k of each mask for
// byte k. A bracket is a byte that reads '{' or '}' with bit 0x20 set.
TEXT ·blockMasks(SB), NOSPLIT, $0-32
	MOVQ   p+0(FP), SI
	MOVOU  quoteBytes<>(SB), X8
	MOVOU  backslashBytes<>(SB), X9
	MOVOU  caseBits<>(SB), X10
	MOVOU  openBytes<>(SB), X11
	MOVOU  closeBytes<>(SB), X12
	XORQ   R8, R8
	XORQ   R9, R9
	XORQ   R10, R10
	XORQ   CX, CX

loop:
	MOVOU    (SI), X0
	MOVO     X0, X1
	PCMPEQB  X8, X1
	PMOVMSKB X1, AX
	SHLQ     CX, AX
	ORQ      AX, R8
	MOVO     X0, X2
	PCMPEQB  X9, X2
	PMOVMSKB X2, AX
	SHLQ     CX, AX
	ORQ      AX, R9
	POR      X10, X0
	MOVO     X0, X3
	PCMPEQB  X11, X3
	PCMPEQB  X12, X0
	POR      X3, X0
	PMOVMSKB X0, AX
	SHLQ     CX, AX
	ORQ      AX, R10
	ADDQ     $16, SI
	ADDQ     $16, CX
	CMPQ     CX, $64
	JB       loop

	MOVQ R8, quotes+8(FP)
	MOVQ R9, backslashes+16(FP)
	MOVQ R10, brackets+24(FP)
	RET
