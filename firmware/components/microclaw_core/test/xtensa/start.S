/* Start file for the QEMU Xtensa sim machine (lx106, call0 ABI): stack, then C. */
    .section .text._start, "ax"
    .literal_position
    .align 4
    .global _start
_start:
    movi    a1, __stack_top
    movi    a0, 0
    call0   sim_main
1:  j       1b
