//! # vir-guest-image — the vIR reference guest on real vCPUs
//!
//! A freestanding x86-64 kernel built for the host target with the stable toolchain: `no_std`,
//! `no_main`, static, not PIE, linked at 1 MiB by `link.ld`. It boots either at the 64-bit entry
//! (every vCPU started in long mode by the VMM, `RDI` = vCPU index, `RSI` = vCPU count) or at
//! the PVH entry (one vCPU, see [`boot`]). It loads its own GDT, TSS and IDT (every gate on an
//! IST stack, since the precompiled `core` assumes a red zone), enables SSE and x2APIC, and
//! runs its workload on vCPU 0:
//!
//! 1. every vCPU comes online and takes an IPI on its own vector, recorded as (vCPU, vector);
//! 2. the PCI bus is scanned through `0xCF8`/`0xCFC`;
//! 3. vIR is discovered through `CPUID` and negotiated through the port-I/O doorbell with the
//!    reference guest's code ([`vir_guest`]); a guest without vIR says it stays legacy;
//! 4. figures: TSC round trips of a no-op doorbell exit and of QUERY.
//!
//! Everything is reported as lines on the debug console (port `0xE9`): `CHECK <name> pass|fail
//! <detail>`, `FIG <name> <key>=<value>...`, free text otherwise; the run ends with a 32-bit
//! write of the exit code to port `0xF4` (QEMU's `isa-debug-exit`): 0 when every check passed.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
#[macro_use]
mod console;
mod conform;
mod heap;
mod mem;
mod pci;
mod vir;
mod workload;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_guest::{Platform, discover};

use arch::{HITS, MAX_CPUS};
use console::{Dec, Hex};

#[global_allocator]
static HEAP: heap::Heap = heap::Heap::new();

/// The exit port (32-bit writes; QEMU's `isa-debug-exit` at `0xF4`).
pub const EXIT_PORT: u16 = 0xF4;
/// Exit code: every check passed.
pub const EXIT_PASS: u32 = 0;
/// Exit code: a check failed.
pub const EXIT_FAIL: u32 = 1;
/// Exit code: a vCPU took an exception.
pub const EXIT_EXCEPTION: u32 = 2;
/// Exit code: the image panicked.
pub const EXIT_PANIC: u32 = 3;
/// The status the doorbell transport reports for buffers larger than its call page (never sent
/// to the host).
pub const TRANSPORT_TOO_LARGE: Status = Status(u32::MAX);

/// vCPUs that finished their setup.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Checks that failed.
pub(crate) static FAILED: AtomicU32 = AtomicU32::new(0);

/// Ends the run with `code` on the exit port, then parks the vCPU.
pub fn exit(code: u32) -> ! {
    arch::outl(EXIT_PORT, code);
    arch::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("PANIC {}", info.message());
    exit(EXIT_PANIC)
}

/// The precompiled `alloc` was built with unwinding and references the personality routine;
/// with `panic = "abort"` nothing unwinds, so it is never called. Should it be, the run ends as
/// a panic.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() -> ! {
    exit(EXIT_PANIC)
}

pub(crate) fn check(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if !ok {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    say!("CHECK {name} {} {detail}", if ok { "pass" } else { "fail" });
}

/// Spins until `done` or about `limit` TSC ticks have passed.
pub(crate) fn wait_until(limit: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = arch::rdtsc();
    while arch::rdtsc().wrapping_sub(start) < limit {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// About a second of TSC ticks on any machine this runs on (a bound, not a measurement).
pub(crate) const WAIT: u64 = 4_000_000_000;

/// The Rust entry of every vCPU (called by `vir_entry64` on its stack).
extern "sysv64" fn kmain(cpu: u64, ncpus: u64) -> ! {
    let cpu = cpu as usize;
    if cpu >= MAX_CPUS {
        arch::halt_forever();
    }
    if cpu == 0 {
        arch::build_tables();
    }
    arch::load_tables(cpu);
    arch::x2apic_enable();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if cpu != 0 {
        loop {
            arch::wait_for_interrupt();
        }
    }
    arch::sti();
    let ncpus = (ncpus as usize).clamp(1, MAX_CPUS);
    say!(
        "vir-guest-image: {} vCPU(s), booted on x2APIC id {}",
        Dec(ncpus as u64),
        Dec(u64::from(arch::apic_id()))
    );
    bring_up(ncpus);
    pci_scan();
    vir_calls(ncpus as u32);
    let failed = FAILED.load(Ordering::Relaxed);
    say!("DONE failed={}", Dec(u64::from(failed)));
    exit(if failed == 0 { EXIT_PASS } else { EXIT_FAIL })
}

fn bring_up(ncpus: usize) {
    let all = wait_until(WAIT, || ONLINE.load(Ordering::Acquire) as usize >= ncpus);
    check(
        "cpus-online",
        all,
        format_args!(
            "{}/{}",
            Dec(u64::from(ONLINE.load(Ordering::Acquire))),
            Dec(ncpus as u64)
        ),
    );
    for (c, row) in HITS.iter().enumerate().take(ncpus) {
        let vector = 0x40 + c as u8;
        arch::send_ipi(c as u32, vector);
        let hit = wait_until(WAIT, || {
            row[usize::from(vector)].load(Ordering::Relaxed) > 0
        });
        check(
            "ipi",
            hit && row[usize::from(vector)].load(Ordering::Relaxed) == 1,
            format_args!("vcpu={} vector={}", Dec(c as u64), Hex(u64::from(vector))),
        );
    }
}

fn pci_scan() {
    for (bdf, id) in pci::scan_bus0() {
        say!(
            "PCI {}:{}.{} vendor={} device={}",
            Hex(u64::from(bdf.bus)),
            Hex(u64::from(bdf.dev)),
            Dec(u64::from(bdf.func)),
            Hex(u64::from(id & 0xFFFF)),
            Hex(u64::from(id >> 16))
        );
    }
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(sorted.len() - 1) * p / 100]
}

fn vir_calls(ncpus: u32) {
    let platform = match discover(&mut vir::HwCpuid) {
        Ok(p) => p,
        Err(e) => {
            check(
                "discovery",
                false,
                format_args!("errno={}", Dec(e.errno() as u64)),
            );
            return;
        }
    };
    let iface = match platform {
        Platform::Vir(iface) => iface,
        Platform::BareMetal | Platform::HypervisorWithoutVir => {
            say!("LEGACY no vIR signature: the guest stays on the legacy scheme");
            let mut times = workload::CallTimes::default();
            workload::run_legacy(ncpus, &mut times);
            figures(&mut [
                ("program-msix-entry", &mut times.program_entry),
                ("latency-legacy", &mut times.latency),
            ]);
            return;
        }
    };
    let Some(ports) = iface.doorbell_ports() else {
        check(
            "doorbell",
            false,
            format_args!("vIR offered without the doorbell binding"),
        );
        return;
    };
    say!(
        "VIR base={} doorbell={}",
        Hex(u64::from(iface.base)),
        Hex(u64::from(ports.start))
    );
    let mut db = vir::Doorbell::new(ports.start as u16, 0);
    let session = vir_guest::negotiation::negotiate(&mut db, Features::V1_DEFINED);
    match &session {
        Ok(s) => check(
            "negotiate",
            true,
            format_args!(
                "session={} version={} features={}",
                Dec(u64::from(s.session)),
                Dec(u64::from(s.version)),
                Hex(s.features.0)
            ),
        ),
        Err(e) => check(
            "negotiate",
            false,
            format_args!("errno={}", Dec(e.errno() as u64)),
        ),
    }
    const N: usize = 200;
    let mut noop = Vec::with_capacity(N);
    let mut query = Vec::with_capacity(N);
    let mut two = Vec::with_capacity(N);
    let mut query_ok = true;
    for _ in 0..N {
        let t0 = arch::rdtsc();
        db.latch_only();
        let t1 = arch::rdtsc();
        query_ok &= vir_guest::hypercall::query(&mut db).is_ok();
        let t2 = arch::rdtsc();
        db.latch_only();
        db.latch_only();
        let t3 = arch::rdtsc();
        noop.push(t1 - t0);
        query.push(t2 - t1);
        two.push(t3 - t2);
    }
    check(
        "query-repeated",
        query_ok,
        format_args!("{} calls", Dec(N as u64)),
    );
    if session.is_ok() {
        conform::run(&mut db);
    }
    let mut times = workload::CallTimes::default();
    if session.is_ok() {
        workload::run(&mut db, ncpus, &mut times);
    }
    figures(&mut [
        ("noop-ring", &mut noop),
        ("two-noop-rings", &mut two),
        ("query", &mut query),
        ("allocate", &mut times.allocate),
        ("activate", &mut times.activate),
        ("set-affinity", &mut times.set_affinity),
        ("latency-vir", &mut times.latency),
    ]);
}

/// Prints one `FIG` line per non-empty sample set (sorted in place).
fn figures(sets: &mut [(&str, &mut Vec<u64>)]) {
    for (name, v) in sets.iter_mut() {
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        say!(
            "FIG {name} n={} p50={} p99={} unit=tsc",
            Dec(v.len() as u64),
            Dec(percentile(v, 50)),
            Dec(percentile(v, 99))
        );
    }
}
