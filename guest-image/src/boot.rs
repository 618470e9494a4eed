//! Entry points, interrupt stubs and the PVH note, in assembly.
//!
//! * `vir_entry64`: the 64-bit entry (the ELF entry point). A VMM starts every vCPU there in long
//!   mode with paging on (identity map of at least the first 4 GiB), `RDI` = the vCPU's index and
//!   `RSI` = the number of vCPUs started.
//! * `vir_pvh_entry`: the PVH entry named by the `XEN_ELFNOTE_PHYS32_ENTRY` note, for VMMs that
//!   boot PVH kernels (QEMU `-kernel`, Cloud Hypervisor, Firecracker): 32-bit protected mode,
//!   paging off, `EBX` = the `hvm_start_info` address. It builds an identity map of 4 GiB with
//!   2 MiB pages, enters long mode and continues at the 64-bit entry as vCPU 0 of 1.
//! * `vir_isr_stubs`: 256 stubs of 16 bytes, one per vector, pushing a zero error code where the
//!   CPU pushes none, then the vector, and joining `vir_isr_common`, which saves the caller-saved
//!   registers and the SSE state, calls [`crate::arch::isr_dispatch`] and returns with `IRETQ`.
//!   Every IDT gate uses IST1, so the interrupted code's red zone is never overwritten.

use crate::arch::{MAX_CPUS, STACK_SIZE};

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .code64
    .global vir_entry64
vir_entry64:
    cli
    cld
    /* SSE on before any Rust code runs: CR0.EM off, CR0.MP on, CR4.OSFXSR | OSXMMEXCPT. */
    mov rax, cr0
    and rax, ~(1 << 2)
    or rax, (1 << 1)
    mov cr0, rax
    mov rax, cr4
    or rax, (1 << 9) | (1 << 10)
    mov cr4, rax
    /* A stack per vCPU index; an index out of range shares the last one and is refused by kmain. */
    mov rax, rdi
    cmp rax, {max_cpus}
    jb 2f
    mov rax, {max_cpus} - 1
2:
    inc rax
    imul rax, rax, {stack_size}
    lea rsp, [rip + vir_stacks]
    add rsp, rax
    xor ebp, ebp
    call {kmain}
3:
    cli
    hlt
    jmp 3b

    .section .bss.vir_stacks, "aw", @nobits
    .balign 4096
vir_stacks:
    .skip {stack_size} * {max_cpus}
"#,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    kmain = sym crate::kmain,
);

core::arch::global_asm!(
    r#"
    .section .text.pvh, "ax"
    .code32
    .global vir_pvh_entry
vir_pvh_entry:
    cli
    cld
    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages (4 GiB). */
    lea edi, [vir_pvh_pd]
    xor ecx, ecx
1:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [edi + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov [edi + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb 1b
    lea edi, [vir_pvh_pdpt]
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset vir_pvh_pd
    or eax, 0x3
    mov [edi + ecx * 8], eax
    mov dword ptr [edi + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 4
    jb 2b
    lea eax, [vir_pvh_pdpt]
    or eax, 0x3
    mov [vir_pvh_pml4], eax
    lea eax, [vir_pvh_pml4]
    mov cr3, eax
    mov eax, cr4
    or eax, (1 << 5)
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8)
    wrmsr
    lgdt [vir_pvh_gdt_ptr]
    mov eax, cr0
    or eax, (1 << 31) | 1
    mov cr0, eax
    /* ljmp 0x08:3f */
    .byte 0xEA
    .long 3f
    .word 0x08
    .code64
3:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor edi, edi
    mov esi, 1
    jmp vir_entry64

    .section .rodata.pvh, "a"
    .balign 16
vir_pvh_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
vir_pvh_gdt_ptr:
    .word 3 * 8 - 1
    .long vir_pvh_gdt

    .section .bss.vir_pvh, "aw", @nobits
    .balign 4096
vir_pvh_pml4:
    .skip 4096
vir_pvh_pdpt:
    .skip 4096
vir_pvh_pd:
    .skip 4096 * 4

    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit PVH entry point. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long vir_pvh_entry
    .balign 4
"#
);

core::arch::global_asm!(
    r#"
    .section .text.isr, "ax"
    .code64
    .global vir_isr_stubs
    .balign 16
vir_isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp vir_isr_common
    .set vec, vec + 1
    .endr
"#,
    options(att_syntax)
);

core::arch::global_asm!(
    r#"
    .section .text.isr, "ax"
    .code64
    .global vir_isr_common
vir_isr_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    /* IST stacks are 16-byte aligned: 5 CPU words + error + vector + 9 registers = 128 bytes. */
    sub rsp, 512
    fxsave64 [rsp]
    mov rdi, [rsp + 512 + 72]
    mov rsi, [rsp + 512 + 80]
    lea rdx, [rsp + 512 + 88]
    call {dispatch}
    fxrstor64 [rsp]
    add rsp, 512
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq
"#,
    dispatch = sym crate::arch::isr_dispatch,
);

unsafe extern "C" {
    /// The first of 256 interrupt stubs, 16 bytes apart.
    pub static vir_isr_stubs: u8;
}
