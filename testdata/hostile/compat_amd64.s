#include "textflag.h"

// func open32(path uint32, flags uint32) int32
TEXT ·open32(SB),NOSPLIT,$0-12
	MOVL path+0(FP), BX
	MOVL flags+4(FP), CX
	MOVL $0, DX
	MOVL $5, AX // i386 __NR_open
	INT $0x80
	MOVL AX, ret+8(FP)
	RET
