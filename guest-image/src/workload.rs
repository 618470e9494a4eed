//! The interrupt workload on the VMM's test device: vectors of every storage kind allocated and
//! activated through vIR on several vCPUs, each fired by the device and checked on arrival
//! (vCPU, vector); then every vector retargeted and fired again; then every vector moved off
//! one vCPU (as a CPU going offline does) and fired again.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use vir_abi::wire::{ActivateRequest, AllocateRequest, SetAffinityRequest, StorageKind, Target};
use vir_guest::hypercall;
use zerocopy::little_endian::{U16, U32};

use crate::arch::{self, HITS, LAST_TSC};
use crate::console::{Dec, Hex};
use crate::vir::Doorbell;
use crate::{WAIT, check, wait_until};

/// The test device's id (segment 0, requester id 00:01.0).
pub const DEVICE_ID: u32 = 0x0008;
/// The test device's "fire entry" register (a 32-bit port write: storage kind in bits 31:24,
/// slot in bits 23:0).
pub const FIRE_PORT: u16 = 0x5670;

/// The test device's PCI vendor and device id.
pub const TEST_DEVICE_IDS: u32 = 0x0001_5649;
/// MSI-X entries the legacy workload programs.
const LEGACY_ENTRIES: u32 = 8;

/// Offset in BAR0 of the device's IMS array (16-byte entries like MSI-X's).
const IMS_ARRAY: u64 = 0x1000;
/// Offset in BAR0 of the register taking the GPA of the IMS entries in system memory.
const IMS_SYSTEM_BASE: u64 = 0x2000;

/// The IMS entries in system memory the device reads (16 bytes each: address lo, address hi,
/// data, control with bit 0 = mask), all masked until programmed.
#[repr(C, align(64))]
struct ImsSystem([[u32; 4]; 16]);
static mut IMS_SYSTEM: ImsSystem = ImsSystem([[0, 0, 0, 1]; 16]);

/// Writes IMS system-memory entry `slot` (below 16).
fn ims_system_write(slot: u32, words: [u32; 4]) {
    let base = (&raw mut IMS_SYSTEM).cast::<[u32; 4]>();
    for (i, w) in words.iter().enumerate() {
        // SAFETY: `slot` < 16 (the caller's bound) and `i` < 4, so the pointer is inside the
        // static; only vCPU 0 writes it, and the device reads it only when asked to fire.
        unsafe {
            core::ptr::write_volatile(base.wrapping_add(slot as usize).cast::<u32>().add(i), *w)
        }
    }
}

/// Slots used per storage kind.
const SLOTS: [(StorageKind, u32); 4] = [
    (StorageKind::MSI, 1),
    (StorageKind::MSIX, 8),
    (StorageKind::IMS_DEVICE, 4),
    (StorageKind::IMS_SYSTEM, 4),
];

struct Entry {
    kind: StorageKind,
    slot: u32,
    handle: u32,
    cpu: u32,
    vector: u8,
}

/// Timings of the calls, in TSC ticks.
#[derive(Default)]
pub struct CallTimes {
    /// ALLOCATE round trips.
    pub allocate: Vec<u64>,
    /// ACTIVATE round trips.
    pub activate: Vec<u64>,
    /// SET_AFFINITY round trips.
    pub set_affinity: Vec<u64>,
    /// Device fire to handler entry.
    pub latency: Vec<u64>,
    /// Legacy: programming one MSI-X entry (mask, address, data, unmask: four trapped writes).
    pub program_entry: Vec<u64>,
}

fn timed<T>(into: &mut Vec<u64>, f: impl FnOnce() -> T) -> T {
    let t0 = arch::rdtsc();
    let r = f();
    into.push(arch::rdtsc().wrapping_sub(t0));
    r
}

/// Fires every entry once and checks where it arrived; reports one `CHECK deliver-<phase>`.
fn fire_all(phase: &str, entries: &[Entry], ncpus: u32, times: &mut CallTimes) {
    let (mut right, mut wrong, mut missing) = (0u64, 0u64, 0u64);
    for e in entries {
        let v = usize::from(e.vector);
        let before: Vec<u32> = (0..ncpus as usize)
            .map(|c| HITS[c][v].load(Ordering::Acquire))
            .collect();
        let t0 = arch::rdtsc();
        arch::outl(FIRE_PORT, (u32::from(e.kind.0) << 24) | e.slot);
        let cpu = e.cpu as usize;
        let arrived = wait_until(WAIT, || HITS[cpu][v].load(Ordering::Acquire) > before[cpu]);
        if arrived {
            right += 1;
            times
                .latency
                .push(LAST_TSC[cpu].load(Ordering::Acquire).wrapping_sub(t0));
        } else {
            missing += 1;
        }
        for (c, b) in before.iter().enumerate() {
            if c != cpu && HITS[c][v].load(Ordering::Acquire) != *b {
                wrong += 1;
            }
        }
    }
    check(
        phase,
        right == entries.len() as u64 && wrong == 0 && missing == 0,
        format_args!(
            "fired={} right={} wrong={} missing={}",
            Dec(entries.len() as u64),
            Dec(right),
            Dec(wrong),
            Dec(missing)
        ),
    );
}

fn retarget(db: &mut Doorbell, e: &mut Entry, cpu: u32, vector: u8, times: &mut CallTimes) -> bool {
    let req = SetAffinityRequest {
        handle: U32::new(e.handle),
        subhandle: U16::new(0),
        target: Target {
            apic_id: U32::new(cpu),
            vector,
            ..Default::default()
        },
        ..Default::default()
    };
    let ok = timed(&mut times.set_affinity, || {
        hypercall::set_affinity(db, &req)
    })
    .is_ok();
    if ok {
        e.cpu = cpu;
        e.vector = vector;
    }
    ok
}

/// The test device's MSI-X table (BAR0) and MSI-X capability, found through PCI configuration
/// space; `None` (and a failed check) when the device or its capability is missing.
fn find_msix() -> Option<(crate::pci::Bdf, u8, u32, u64)> {
    let Some((bdf, _)) = crate::pci::scan_bus0()
        .into_iter()
        .find(|(_, id)| *id == TEST_DEVICE_IDS)
    else {
        check("msix-device", false, format_args!("test device not found"));
        return None;
    };
    let bar = u64::from(bdf.read(0x10) & !0xF);
    let cap = (bdf.read(0x34) & 0xFC) as u8;
    let head = bdf.read(cap);
    if head & 0xFF != 0x11 {
        check("msix-device", false, format_args!("no MSI-X capability"));
        return None;
    }
    Some((bdf, cap, head, bar))
}

/// The config-space offset of the device's MSI capability (walking the capability list).
fn msi_cap(bdf: crate::pci::Bdf) -> Option<u8> {
    let mut at = (bdf.read(0x34) & 0xFC) as u8;
    for _ in 0..48 {
        if at == 0 {
            return None;
        }
        let head = bdf.read(at);
        if head & 0xFF == 0x05 {
            return Some(at);
        }
        at = ((head >> 8) & 0xFC) as u8;
    }
    None
}

/// Programs the MSI capability with `words` (address lo, address hi, data) and enables it with
/// one vector, vector 0 unmasked.
fn program_msi(bdf: crate::pci::Bdf, words: [u32; 4]) {
    let Some(cap) = msi_cap(bdf) else {
        check("msi-capability", false, format_args!("no MSI capability"));
        return;
    };
    bdf.write(cap + 4, words[0]);
    bdf.write(cap + 8, words[1]);
    bdf.write(cap + 0xC, words[2] & 0xFFFF);
    bdf.write(cap + 0x10, 0);
    let head = bdf.read(cap);
    // MSI Enable, Multiple Message Enable 0 (one vector).
    let control = ((head >> 16) & !0x70) | 1;
    bdf.write(cap, (head & 0xFFFF) | (control << 16));
}

/// Runs the workload over the doorbell `db` on `ncpus` vCPUs (x2APIC id = index).
///
/// MSI-X entries get the message ACTIVATE returned written into the device's table (mapped,
/// not trapped, once vIR is negotiated), so the device's interrupt goes through the modelled
/// VT-d unit; MSI-X is enabled first (NEGOTIATE requires it disabled, VIR-NEG-H-004).
pub fn run(db: &mut Doorbell, ncpus: u32, times: &mut CallTimes) {
    let Some((bdf, cap, head, bar)) = find_msix() else {
        return;
    };
    bdf.write(cap, (head & 0xFFFF) | (0x8000 << 16));
    let ims_base = (&raw const IMS_SYSTEM) as u64;
    mmio_write(bar + IMS_SYSTEM_BASE, ims_base as u32);
    mmio_write(bar + IMS_SYSTEM_BASE + 4, (ims_base >> 32) as u32);
    let mut entries = Vec::new();
    let mut setup_ok = true;
    let mut n = 0u32;
    for (kind, count) in SLOTS {
        for slot in 0..count {
            let req = AllocateRequest {
                device_id: U32::new(DEVICE_ID),
                kind: kind.0,
                index: U32::new(slot),
                ..Default::default()
            };
            let Ok(alloc) = timed(&mut times.allocate, || hypercall::allocate(db, &req)) else {
                setup_ok = false;
                check(
                    "allocate",
                    false,
                    format_args!(
                        "kind={} slot={}",
                        Dec(u64::from(kind.0)),
                        Dec(u64::from(slot))
                    ),
                );
                continue;
            };
            let cpu = n % ncpus;
            let vector = 0x50 + n as u8;
            let act = ActivateRequest {
                handle: alloc.handle,
                subhandle: U16::new(0),
                flags: U16::new(0),
                target: Target {
                    apic_id: U32::new(cpu),
                    vector,
                    ..Default::default()
                },
            };
            let activated = timed(&mut times.activate, || hypercall::activate(db, &act));
            match activated {
                Ok(msg) => {
                    // The message goes where the device reads it.
                    let words = [
                        msg.address_lo.get(),
                        msg.address_hi.get(),
                        msg.data.get(),
                        0,
                    ];
                    let device_entry = match kind {
                        StorageKind::MSIX => Some(bar + 16 * u64::from(slot)),
                        StorageKind::IMS_DEVICE => Some(bar + IMS_ARRAY + 16 * u64::from(slot)),
                        _ => None,
                    };
                    if let Some(e) = device_entry {
                        for (i, w) in words.iter().enumerate() {
                            mmio_write(e + 4 * i as u64, *w);
                        }
                    } else if kind == StorageKind::IMS_SYSTEM {
                        ims_system_write(slot, words);
                    } else if kind == StorageKind::MSI {
                        program_msi(bdf, words);
                    }
                    say!(
                        "VECTOR kind={} slot={} vcpu={} vector={} msi={}:{}",
                        Dec(u64::from(kind.0)),
                        Dec(u64::from(slot)),
                        Dec(u64::from(cpu)),
                        Hex(u64::from(vector)),
                        Hex(u64::from(msg.address_lo.get())),
                        Hex(u64::from(msg.data.get()))
                    );
                    entries.push(Entry {
                        kind,
                        slot,
                        handle: alloc.handle.get(),
                        cpu,
                        vector,
                    });
                }
                Err(e) => {
                    setup_ok = false;
                    check(
                        "activate",
                        false,
                        format_args!(
                            "slot={} errno={}",
                            Dec(u64::from(slot)),
                            Dec(e.errno() as u64)
                        ),
                    );
                }
            }
            n += 1;
        }
    }
    check(
        "setup",
        setup_ok,
        format_args!("{} vectors of 4 storage kinds", Dec(entries.len() as u64)),
    );
    fire_all("deliver-after-setup", &entries, ncpus, times);

    let mut moved = true;
    for (i, e) in entries.iter_mut().enumerate() {
        let cpu = (e.cpu + 1) % ncpus;
        moved &= retarget(db, e, cpu, 0x70 + i as u8, times);
    }
    check(
        "retarget-all",
        moved,
        format_args!("{}", Dec(entries.len() as u64)),
    );
    fire_all("deliver-after-retarget", &entries, ncpus, times);

    if ncpus > 1 {
        let offline = 1u32;
        let mut moved = true;
        for (i, e) in entries.iter_mut().enumerate() {
            if e.cpu == offline {
                moved &= retarget(db, e, 0, 0x90 + i as u8, times);
            }
        }
        check(
            "vcpu-offline-migrated",
            moved && entries.iter().all(|e| e.cpu != offline),
            format_args!("vcpu={}", Dec(u64::from(offline))),
        );
        fire_all("deliver-after-offline", &entries, ncpus, times);
    }
}

/// Writes a 32-bit device register.
fn mmio_write(addr: u64, value: u32) {
    // SAFETY: `addr` is in the test device's BAR (the MSI-X table), identity mapped by the boot
    // page tables and backed by no RAM: the write exits to the VMM and touches no Rust object.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Programs MSI-X entry `index` of the table at `bar` for (`cpu`, `vector`) the way Linux does
/// without interrupt remapping: mask, compatibility-format address and data, unmask.
fn program_entry(bar: u64, index: u32, cpu: u32, vector: u8, times: &mut CallTimes) {
    let e = bar + 16 * u64::from(index);
    timed(&mut times.program_entry, || {
        mmio_write(e + 12, 1);
        mmio_write(e, 0xFEE0_0000 | ((cpu & 0xFF) << 12));
        mmio_write(e + 4, 0);
        mmio_write(e + 8, u32::from(vector));
        mmio_write(e + 12, 0);
    });
}

/// The legacy situation (no vIR signature): MSI-X programmed directly in the device's table,
/// which the VMM traps and the host emulates; the same three phases as with vIR. IMS is not
/// available without vIR, so the image asks for none.
pub fn run_legacy(ncpus: u32, times: &mut CallTimes) {
    let Some((bdf, _)) = crate::pci::scan_bus0()
        .into_iter()
        .find(|(_, id)| *id == TEST_DEVICE_IDS)
    else {
        check(
            "legacy-device",
            false,
            format_args!("test device not found"),
        );
        return;
    };
    let bar = u64::from(bdf.read(0x10) & !0xF);
    let cap = (bdf.read(0x34) & 0xFC) as u8;
    let head = bdf.read(cap);
    if head & 0xFF != 0x11 {
        check("legacy-device", false, format_args!("no MSI-X capability"));
        return;
    }
    let table_size = ((head >> 16) & 0x7FF) + 1;
    check(
        "legacy-device",
        table_size >= LEGACY_ENTRIES,
        format_args!(
            "bar={} msix-entries={}",
            Hex(bar),
            Dec(u64::from(table_size))
        ),
    );
    // Enable with the function masked while the table is programmed, then unmask.
    bdf.write(cap, (head & 0xFFFF) | (0xC000 << 16));
    let mut entries = Vec::new();
    for slot in 0..LEGACY_ENTRIES {
        let cpu = slot % ncpus;
        let vector = 0x50 + slot as u8;
        program_entry(bar, slot, cpu, vector, times);
        entries.push(Entry {
            kind: StorageKind::MSIX,
            slot,
            handle: 0,
            cpu,
            vector,
        });
    }
    bdf.write(cap, (head & 0xFFFF) | (0x8000 << 16));
    check(
        "legacy-msix-enabled",
        (bdf.read(cap) >> 16) & 0xC000 == 0x8000,
        format_args!("control={}", Hex(u64::from(bdf.read(cap) >> 16))),
    );
    say!("LEGACY IMS not used: it needs vIR; the legacy scheme has MSI and MSI-X only");
    fire_all("legacy-deliver-after-setup", &entries, ncpus, times);
    for (i, e) in entries.iter_mut().enumerate() {
        e.cpu = (e.cpu + 1) % ncpus;
        e.vector = 0x70 + i as u8;
        program_entry(bar, e.slot, e.cpu, e.vector, times);
    }
    fire_all("legacy-deliver-after-retarget", &entries, ncpus, times);
    if ncpus > 1 {
        for (i, e) in entries.iter_mut().enumerate() {
            if e.cpu == 1 {
                e.cpu = 0;
                e.vector = 0x90 + i as u8;
                program_entry(bar, e.slot, e.cpu, e.vector, times);
            }
        }
        fire_all("legacy-deliver-after-offline", &entries, ncpus, times);
    }
}
