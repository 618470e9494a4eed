//! x86-64 processor setup: port and MSR access, the GDT with one TSS per vCPU, the IDT (every
//! gate on IST1), x2APIC, and the interrupt dispatcher that records (vCPU, vector).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::boot::vir_isr_stubs;

/// Most vCPUs the image runs on.
pub const MAX_CPUS: usize = 16;
/// Size of each vCPU's kernel stack and of each IST stack.
pub const STACK_SIZE: usize = 64 * 1024;
/// First vector the interrupt counters track (vectors below are exceptions).
pub const FIRST_DEVICE_VECTOR: usize = 32;

/// `IA32_APIC_BASE`.
const MSR_APIC_BASE: u32 = 0x1B;
/// x2APIC register MSRs.
const X2APIC_ID: u32 = 0x802;
const X2APIC_EOI: u32 = 0x80B;
const X2APIC_SVR: u32 = 0x80F;
const X2APIC_ICR: u32 = 0x830;
/// `IA32_TSC_DEADLINE` is not used; the TSC is read with `RDTSC`.
const SPURIOUS_VECTOR: u8 = 0xFF;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effect visible to Rust; the ports this image writes are
    // the VMM's console, exit, PCI and doorbell ports.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nostack)) }
}

/// Writes a 32-bit value to an I/O port. Not `nomem`: a doorbell ring makes the host read and
/// write guest memory, so the compiler must not keep memory values across it.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`; the asm is a compiler memory barrier on purpose.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)) }
}

/// Reads a 32-bit value from an I/O port.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: port input has no memory effect visible to Rust.
    unsafe { core::arch::asm!("in eax, dx", out("eax") value, in("dx") port, options(nostack)) }
    value
}

/// Reads an MSR.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only architectural MSRs this image knows exist (x2APIC, APIC base) are read.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only the x2APIC and APIC-base MSRs are written, with architecturally valid values.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nostack))
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: the IDT is loaded before any caller enables interrupts.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) }
}

/// Waits for an interrupt with interrupts enabled (`STI; HLT`, no window in between).
pub fn wait_for_interrupt() {
    // SAFETY: the IDT is loaded; STI's interrupt shadow covers HLT.
    unsafe { core::arch::asm!("sti; hlt", options(nostack)) }
}

/// Stops this vCPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT parks the vCPU; nothing is touched.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) }
    }
}

#[repr(C, align(16))]
struct Gdt([u64; 3 + 2 * MAX_CPUS]);
#[repr(C, align(16))]
struct Idt([u64; 512]);
#[repr(C, align(16))]
struct Tss([u32; 26]);
#[repr(C, align(16))]
struct IstStacks([[u8; STACK_SIZE]; MAX_CPUS]);

static mut GDT: Gdt = Gdt([0; 3 + 2 * MAX_CPUS]);
static mut IDT: Idt = Idt([0; 512]);
static mut TSS: [Tss; MAX_CPUS] = [const { Tss([0; 26]) }; MAX_CPUS];
static mut IST: IstStacks = IstStacks([[0; STACK_SIZE]; MAX_CPUS]);
/// Set by vCPU 0 once the shared tables are built.
static TABLES_READY: AtomicBool = AtomicBool::new(false);

/// Code selector.
const KERNEL_CS: u64 = 0x08;

#[allow(
    clippy::deref_addrof,
    reason = "the static muts are reached through raw pointers, never a direct reference"
)]
/// Builds the GDT (with every vCPU's TSS) and the IDT. vCPU 0 calls it once, before any other
/// vCPU calls [`load_tables`].
pub fn build_tables() {
    let stubs = &raw const vir_isr_stubs as u64;
    // SAFETY: only vCPU 0 runs this, before TABLES_READY is published; every other vCPU waits
    // for it in `load_tables` before reading the tables.
    unsafe {
        let gdt = &mut *(&raw mut GDT);
        gdt.0[0] = 0;
        gdt.0[1] = 0x00AF_9A00_0000_FFFF;
        gdt.0[2] = 0x00CF_9200_0000_FFFF;
        for cpu in 0..MAX_CPUS {
            let tss = &mut (*(&raw mut TSS))[cpu];
            let ist_top = (&raw mut (*(&raw mut IST)).0[cpu]) as u64 + STACK_SIZE as u64;
            tss.0[9] = ist_top as u32;
            tss.0[10] = (ist_top >> 32) as u32;
            tss.0[25] = 104 << 16;
            let base = tss as *mut Tss as u64;
            let limit = 103u64;
            gdt.0[3 + 2 * cpu] = (limit & 0xFFFF)
                | ((base & 0xFF_FFFF) << 16)
                | (0x89 << 40)
                | (((limit >> 16) & 0xF) << 48)
                | (((base >> 24) & 0xFF) << 56);
            gdt.0[4 + 2 * cpu] = base >> 32;
        }
        let idt = &mut *(&raw mut IDT);
        for v in 0..256u64 {
            let offset = stubs + 16 * v;
            idt.0[2 * v as usize] = (offset & 0xFFFF)
                | (KERNEL_CS << 16)
                | (1 << 32)
                | (0x8E << 40)
                | (((offset >> 16) & 0xFFFF) << 48);
            idt.0[2 * v as usize + 1] = offset >> 32;
        }
    }
    TABLES_READY.store(true, Ordering::Release);
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT, this vCPU's TSS and the IDT (waiting for vCPU 0 to have built them).
pub fn load_tables(cpu: usize) {
    while !TABLES_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let gdt = DescriptorPointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: &raw const GDT as u64,
    };
    let idt = DescriptorPointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: &raw const IDT as u64,
    };
    let tss_selector = (3 + 2 * cpu as u16) * 8;
    // SAFETY: the tables are built (TABLES_READY) and static; the selectors reloaded are the
    // code and data descriptors at 0x08 and 0x10 of the new GDT, equal to the boot ones; each
    // vCPU loads its own TSS descriptor, so none is loaded twice.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "ltr {tss:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            tss = in(reg) tss_selector,
            tmp = out(reg) _,
        );
    }
}

/// Enables this vCPU's local APIC in x2APIC mode, software-enabled with the spurious vector.
pub fn x2apic_enable() {
    let base = rdmsr(MSR_APIC_BASE);
    // Enable (bit 11) first, then x2APIC mode (bit 10): the architectural order.
    wrmsr(MSR_APIC_BASE, base | (1 << 11));
    wrmsr(MSR_APIC_BASE, base | (1 << 11) | (1 << 10));
    wrmsr(X2APIC_SVR, (1 << 8) | u64::from(SPURIOUS_VECTOR));
}

/// This vCPU's x2APIC id.
pub fn apic_id() -> u32 {
    rdmsr(X2APIC_ID) as u32
}

/// Sends a fixed, physical-destination IPI with `vector` to the vCPU with x2APIC id `dest`.
pub fn send_ipi(dest: u32, vector: u8) {
    wrmsr(X2APIC_ICR, (u64::from(dest) << 32) | u64::from(vector));
}

/// Interrupts taken, per vCPU (x2APIC id) and vector.
pub static HITS: [[AtomicU32; 256]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; 256] }; MAX_CPUS];
/// TSC at the last interrupt taken, per vCPU.
pub static LAST_TSC: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Interrupts taken on a vCPU whose id is out of range, or with an unexpected vector.
pub static STRAY: AtomicU32 = AtomicU32::new(0);

/// Called by `vir_isr_common` with the vector, the error code (0 where the CPU pushes none) and
/// the interrupt frame (RIP, CS, RFLAGS, RSP, SS).
pub extern "sysv64" fn isr_dispatch(vector: u64, error: u64, frame: *const u64) {
    let tsc = rdtsc();
    if vector < FIRST_DEVICE_VECTOR as u64 {
        // SAFETY: `frame` points at the five words the CPU pushed on the IST stack.
        let rip = unsafe { frame.read() };
        crate::console::exception(vector, error, rip);
        crate::exit(crate::EXIT_EXCEPTION);
    }
    if vector == u64::from(SPURIOUS_VECTOR) {
        return;
    }
    let id = apic_id() as usize;
    match HITS.get(id) {
        Some(row) => {
            row[vector as usize].fetch_add(1, Ordering::Relaxed);
            LAST_TSC[id].store(tsc, Ordering::Release);
        }
        None => {
            STRAY.fetch_add(1, Ordering::Relaxed);
        }
    }
    wrmsr(X2APIC_EOI, 0);
}
