//! The `hostile_storage` body: a hostile guest writes arbitrary messages into every kind of
//! interrupt storage its devices have and fires them (`spec/vir-v1.md` §10; VIR-SEC-H-001..003,
//! VIR-SEC-H-012).
//!
//! It runs on `vir-simvm`'s [`World`]: the reference host and two reference guests on the
//! simulated platform (VT-d remapping unit, posted descriptors, KVM- and VFIO-like models,
//! devices with MSI, MSI-X, IMS-in-device-memory and IMS-in-system-memory storage). Both guests
//! set up interrupts of every kind through the real calls, then the input drives
//!
//! * forged messages — random bits, remappable messages naming any handle, the other VM's or
//!   another device's issued messages, compatibility-format messages to any APIC id and vector,
//!   AMD-Vi-shaped messages — written with the storage's own write path and fired;
//! * raw bytes written anywhere in a storage region (MSI capability registers, MSI-X table,
//!   IMS array, IMS queue context in guest memory), then a fire;
//! * arbitrary DMA writes to the interrupt window with any requester id, including ids no VM has;
//! * guest actions that change what is set up (request, free, set affinity) and storage
//!   controls (mask, MSI-X and MSI enable).
//!
//! After every fire or write: nothing was handled by a vCPU of a VM that does not own the writing
//! device, the other VM's LAPICs accepted nothing, and what the writer's own VM received went to
//! an (APIC id, vector) that one of its ACTIVE vectors targets on the host. Every forged write
//! is counted, and every delivery outside those bounds is a finding.

use core::fmt;

use std::collections::BTreeSet;

use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiMessage};
use vir_abi::hw::vtd::RemappableMsi;
use vir_guest::{AllocRequest, CpuId, CpuMask, DeviceId as GuestDeviceId, Irq};
use vir_host::{IrMode, VectorState};
use vir_platform::device::StorageRegion;
use vir_platform::{DeviceId, FireOutcome, RequesterId, StorageSlot};
use vir_simvm::{Delivery, DeviceSpec, VmSpec, World, WorldBuilder};

use crate::input::{Encoder, Input};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;

/// The guest id of each VM's multi-storage device.
pub const DEV_A: GuestDeviceId = GuestDeviceId::new(0, 0x18);
/// The guest id of each VM's second device (MSI-X).
pub const DEV_B: GuestDeviceId = GuestDeviceId::new(0, 0x20);
/// Physical requester ids: VM 0's devices, VM 1's devices.
pub const REQUESTER_IDS: [[u16; 2]; 2] = [[0x8100, 0x8200], [0x9100, 0x9200]];
/// Guest APIC ids of each VM's vCPUs.
pub const APIC_IDS: [[u32; 3]; 2] = [[0, 1, 256], [0, 7, 300]];

/// What the `hostile_storage` body found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFinding {
    /// A forged write reached a vCPU of a VM other than the writer's (VIR-SEC-H-003, B17).
    DeliveredOutside {
        /// The writing device's VM (`None`: a requester id no VM owns).
        writer: Option<usize>,
        /// The VM that received it.
        receiver: Option<usize>,
        /// The message.
        message: MsiMessage,
    },
    /// A forged write reached the writer's own VM on an (APIC id, vector) none of its ACTIVE
    /// vectors targets (VIR-SEC-H-002, VIR-SEC-H-003).
    DeliveredUnsetUp {
        /// The VM.
        vm: usize,
        /// The APIC id.
        apic_id: u32,
        /// The vector.
        vector: u8,
        /// The message.
        message: MsiMessage,
    },
    /// The other VM's LAPICs accepted an interrupt during a forged write.
    OtherVmAccepted {
        /// The writer's VM (`None`: a requester id no VM owns).
        writer: Option<usize>,
        /// Interrupts accepted by the other VM.
        accepted: u64,
    },
}

impl fmt::Display for StorageFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for StorageFinding {}

/// Counts of a `hostile_storage` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageReport {
    /// Forged messages (and raw storage writes, and DMA writes) that were fired.
    pub forged_tried: u64,
    /// Of those, blocked by the remapping unit.
    pub blocked: u64,
    /// Of those, delivered to one of the writer's own ACTIVE targets.
    pub delivered_own: u64,
    /// Of those, masked, dropped, or not sent by the device.
    pub other: u64,
    /// Deliveries outside the writer's own set-up vectors (a finding whenever non-zero; kept so
    /// that reports can state it).
    pub delivered_outside: u64,
    /// Guest actions performed.
    pub guest_actions: u64,
}

/// The world the body runs in: two VMs, each with a device carrying MSI (4 vectors), IMS in
/// device memory (4) and IMS in system memory (2 queues), and a device with MSI-X (4). (A PCI
/// function enables MSI or MSI-X, not both, hence two devices.)
///
/// # Panics
/// If the fixed world cannot be built (a harness or simvm bug, not a finding).
pub fn build_world(mode: IrMode) -> World {
    let vm = |i: usize| {
        VmSpec::new(APIC_IDS[i].to_vec())
            .with_device(
                DeviceSpec::new("a", DEV_A, REQUESTER_IDS[i][0])
                    .with_msi(2)
                    .with_ims_device(4)
                    .with_ims_system(2),
            )
            .with_device(DeviceSpec::new("b", DEV_B, REQUESTER_IDS[i][1]).with_msix(4))
    };
    WorldBuilder::new()
        .mode(mode)
        .pcpus(4)
        .table_size_s(6)
        .vm(vm(0))
        .vm(vm(1))
        .build()
        .unwrap_or_else(|e| panic!("hostile_storage world: {e}"))
}

/// Allocate every storage of both VMs and request the irqs whose bit in `requested` is set (bit
/// `i` for the `i`-th irq of the VM, in allocation order: MSI 0–3, IMS device 4–7, IMS system
/// 8–9, MSI-X 10–13). Returns the irqs of each VM.
pub fn set_up(w: &mut World, requested: [u16; 2]) -> [Vec<Irq>; 2] {
    let mut out: [Vec<Irq>; 2] = [Vec::new(), Vec::new()];
    for (vm, irqs) in out.iter_mut().enumerate() {
        let Ok(g) = w.guest_mut(vm) else { continue };
        let reqs: [(GuestDeviceId, AllocRequest<'_>); 4] = [
            (DEV_A, AllocRequest::Msi { nvec: 4 }),
            (
                DEV_A,
                AllocRequest::ImsDevice {
                    indices: &[0, 1, 2, 3],
                },
            ),
            (DEV_A, AllocRequest::ImsSystem { indices: &[0, 1] }),
            (
                DEV_B,
                AllocRequest::MsiX {
                    indices: &[0, 1, 2, 3],
                },
            ),
        ];
        for (dev, req) in reqs {
            // A failure (e.g. a quota) simply leaves that storage unallocated.
            if let Ok(v) = g.alloc_irq_vectors(dev, req, None) {
                irqs.extend(v);
            }
        }
        for (i, &irq) in irqs.iter().enumerate() {
            if requested[vm] >> (i % 16) & 1 == 1 {
                let _ = g.request_irq(irq);
            }
        }
    }
    out
}

/// The (APIC id, vector) targets of VM `vm`'s ACTIVE vectors, as the host holds them.
fn active_targets(w: &World, vm: usize) -> BTreeSet<(u32, u8)> {
    let Ok(v) = w.vm(vm) else {
        return BTreeSet::new();
    };
    let host = w.host();
    let Some(hv) = host.vm(v.id()) else {
        return BTreeSet::new();
    };
    hv.allocations()
        .flat_map(|(_, a)| a.vectors.iter())
        .filter_map(|s| match s {
            VectorState::Active(a) => Some((a.target.apic_id, a.target.vector)),
            _ => None,
        })
        .collect()
}

/// The VM owning `rid`, if any.
fn owner(rid: u16) -> Option<usize> {
    REQUESTER_IDS.iter().position(|r| r.contains(&rid))
}

/// Every message the guests hold (issued by the host), by VM.
fn issued(w: &World, vm: usize) -> Vec<MsiMessage> {
    let Ok(v) = w.vm(vm) else { return Vec::new() };
    let g = v.guest();
    g.irqs()
        .filter_map(|i| g.irq_info(i).and_then(|x| x.message))
        .collect()
}

fn pick<T: Copy>(v: &[T], sel: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(sel) % v.len()])
}

/// A forged message chosen by the input.
fn forge(w: &World, input: &mut Input<'_>, writer: usize) -> MsiMessage {
    let sel = input.u8();
    match sel % 8 {
        0 => MsiMessage::new(input.u32(), input.u32(), input.u32()),
        1 | 2 => {
            // A remappable message naming a handle near the used part of the table.
            let handle = u16::from(input.u8()) % 144;
            let mut m = RemappableMsi {
                handle,
                shv: sel & 0x80 == 0,
                subhandle: 0,
            }
            .encode();
            m.data = u32::from(input.u8() % 8);
            m
        }
        3 => pick(&issued(w, (writer + 1) % 2), input.u8()).unwrap_or_default(),
        4 => pick(&issued(w, writer), input.u8()).unwrap_or_default(),
        5 => {
            // Compatibility format: any APIC id (with or without the extended destination
            // bits) and vector.
            let dest = u32::from(input.u16()) & 0x7fff;
            let vector = input.u8();
            CompatMsi {
                dest_id: dest & 0xff,
                dest_mode_logical: false,
                redirection_hint: false,
                vector,
                delivery_mode: DeliveryMode::Fixed,
                level_assert: false,
                trigger_level: false,
            }
            .encode(false)
            .map(|mut m| {
                m.address_lo |= (dest >> 8) << 5;
                m
            })
            .unwrap_or_default()
        }
        6 => MsiMessage::new(
            0xFEE0_0000 | u32::from(input.u8() & 4),
            0,
            u32::from(input.u16()) & 0x7ff,
        ),
        _ => {
            // An issued message with some bits changed.
            let mut m = pick(&issued(w, usize::from(sel >> 7)), input.u8()).unwrap_or_default();
            m.address_lo ^= u32::from(input.u16());
            m.data ^= u32::from(input.u16());
            m
        }
    }
}

/// A storage slot of device `dev` chosen by the input (any kind, index in range or not).
fn slot(input: &mut Input<'_>) -> StorageSlot {
    let sel = input.u8();
    let index = u32::from(input.u8() % 6);
    match sel % 4 {
        0 => StorageSlot::msi(index % 4),
        1 => StorageSlot::msix(index),
        2 => StorageSlot::ims_device(index),
        _ => StorageSlot::ims_system(index % 3),
    }
}

fn device(w: &World, vm: usize, sel: u8) -> Option<DeviceId> {
    let v = w.vm(vm).ok()?;
    v.devices()
        .get(usize::from(sel) % v.devices().len().max(1))
        .map(|d| d.device)
}

/// Judge one delivery of a write by a device of VM `writer` (`None`: no VM's). `targets` holds,
/// per VM, every (APIC id, vector) one of its ACTIVE vectors has targeted so far: an interrupt
/// left pending by an earlier write (a masked source released later, a coalesced PIR bit) may
/// surface after the guest moved the vector, and it still went where the VM itself set up.
fn judge(
    w: &World,
    targets: &[BTreeSet<(u32, u8)>; 2],
    writer: Option<usize>,
    message: MsiMessage,
    d: &Delivery,
    accepted_before: [u64; 2],
    report: &mut StorageReport,
) -> Result<(), StorageFinding> {
    report.forged_tried += 1;
    let receiver = match d.outcome {
        FireOutcome::Delivered { vcpu, .. } => Some(Some(vcpu.vm.0 as usize)),
        FireOutcome::Posted(p) => Some(p.owner.map(|o| o.vm.0 as usize)),
        FireOutcome::Faulted(_) | FireOutcome::Aborted(_) => {
            report.blocked += 1;
            None
        }
        FireOutcome::Masked | FireOutcome::Dropped(_) => {
            report.other += 1;
            None
        }
    };
    for (vm, &before) in accepted_before.iter().enumerate() {
        if Some(vm) == writer {
            continue;
        }
        let now = w.accepted(vm).unwrap_or(before);
        if now != before {
            report.delivered_outside += 1;
            return Err(StorageFinding::OtherVmAccepted {
                writer,
                accepted: now - before,
            });
        }
    }
    if let Some(receiver) = receiver {
        if receiver != writer || writer.is_none() {
            report.delivered_outside += 1;
            return Err(StorageFinding::DeliveredOutside {
                writer,
                receiver,
                message,
            });
        }
        let Some(vm) = writer else {
            return Ok(());
        };
        let targets = &targets[vm % 2];
        for h in &d.handled {
            if h.vm != Some(vm) {
                report.delivered_outside += 1;
                return Err(StorageFinding::DeliveredOutside {
                    writer,
                    receiver: h.vm,
                    message,
                });
            }
            if !targets.contains(&(h.apic_id, h.vector)) {
                report.delivered_outside += 1;
                return Err(StorageFinding::DeliveredUnsetUp {
                    vm,
                    apic_id: h.apic_id,
                    vector: h.vector,
                    message,
                });
            }
        }
        report.delivered_own += 1;
    } else if let Some(h) = d.handled.first() {
        report.delivered_outside += 1;
        return Err(StorageFinding::DeliveredOutside {
            writer,
            receiver: h.vm,
            message,
        });
    }
    Ok(())
}

fn accepted(w: &World) -> [u64; 2] {
    [w.accepted(0).unwrap_or(0), w.accepted(1).unwrap_or(0)]
}

fn region(sel: u8, index: u32) -> StorageRegion {
    match sel % 4 {
        0 => StorageRegion::MsiCapability,
        1 => StorageRegion::MsixTable,
        2 => StorageRegion::ImsArray,
        _ => StorageRegion::ImsQueueContext(index % 3),
    }
}

/// The `hostile_storage` body.
pub fn hostile_storage(data: &[u8]) -> Result<StorageReport, StorageFinding> {
    let mut input = Input::new(data);
    let flags = input.u8();
    let mode = if flags & 1 == 0 {
        IrMode::Posted
    } else {
        IrMode::Remapped
    };
    let mut w = build_world(mode);
    let requested = [input.u16(), input.u16()];
    let irqs = set_up(&mut w, requested);
    let mut report = StorageReport::default();
    let mut targets = [active_targets(&w, 0), active_targets(&w, 1)];
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        for (vm, t) in targets.iter_mut().enumerate() {
            t.extend(active_targets(&w, vm));
        }
        let tag = input.u8();
        let vm = usize::from(tag >> 7);
        match tag % 8 {
            0..=3 => {
                let Some(dev) = device(&w, vm, input.u8()) else {
                    continue;
                };
                let s = slot(&mut input);
                let msg = forge(&w, &mut input, vm);
                let before = accepted(&w);
                // The guest writes through the storage's own path; a slot the device does not
                // have is simply refused.
                if w.machine_mut().write_message(dev, s, msg).is_err() {
                    continue;
                }
                if let Ok(d) = w.fire(dev, s) {
                    judge(&w, &targets, Some(vm), msg, &d, before, &mut report)?;
                }
            }
            4 => {
                let Some(dev) = device(&w, vm, input.u8()) else {
                    continue;
                };
                let sel = input.u8();
                let r = region(sel, u32::from(sel >> 2));
                let offset = u64::from(input.u8() % 80);
                let bytes = input.array::<8>();
                let len = usize::from(input.u8() % 8) + 1;
                let before = accepted(&w);
                let Ok(released) = w.machine_mut().write_storage(dev, r, offset, &bytes[..len])
                else {
                    continue;
                };
                // Sources the write unmasked fired at once: judge them too (the platform already
                // ran them; their handled part is drained by the next fire).
                for outcome in released {
                    let d = Delivery {
                        outcome,
                        handled: Vec::new(),
                    };
                    judge(
                        &w,
                        &targets,
                        Some(vm),
                        MsiMessage::default(),
                        &d,
                        before,
                        &mut report,
                    )?;
                }
                let s = slot(&mut input);
                let before = accepted(&w);
                let stored = w.machine().stored_message(dev, s).unwrap_or_default();
                if let Ok(d) = w.fire(dev, s) {
                    judge(&w, &targets, Some(vm), stored, &d, before, &mut report)?;
                }
            }
            5 => {
                // DMA to the interrupt window with a chosen requester id.
                let rid = match input.u8() % 6 {
                    k @ 0..=3 => REQUESTER_IDS[usize::from(k) / 2][usize::from(k) % 2],
                    4 => 0x0008,
                    _ => input.u16(),
                };
                let msg = forge(&w, &mut input, vm);
                let before = accepted(&w);
                let d = w.inject_write(RequesterId(rid), msg);
                judge(&w, &targets, owner(rid), msg, &d, before, &mut report)?;
            }
            6 => {
                // The guest changes what is set up.
                let Some(&irq) = irqs[vm].get(usize::from(input.u8()) % irqs[vm].len().max(1))
                else {
                    continue;
                };
                let action = input.u8();
                let cpu = CpuId(u32::from(input.u8() % 3));
                if let Ok(g) = w.guest_mut(vm) {
                    report.guest_actions += 1;
                    let _ = match action % 3 {
                        0 => g.request_irq(irq).map(|_| ()),
                        1 => g.free_irq(irq).map(|_| ()),
                        _ => g.set_affinity(irq, &CpuMask::single(cpu)),
                    };
                }
                targets[vm % 2].extend(active_targets(&w, vm));
            }
            _ => {
                // Storage controls: mask a source, MSI-X enable/function mask, MSI enable/MME.
                let Some(dev) = device(&w, vm, input.u8()) else {
                    continue;
                };
                let ctl = input.u8();
                let s = slot(&mut input);
                let before = accepted(&w);
                let released = match ctl % 3 {
                    0 => w.machine_mut().set_masked(dev, s, ctl & 0x80 != 0),
                    1 => w
                        .machine_mut()
                        .set_msix_control(dev, ctl & 0x40 != 0, ctl & 0x80 != 0),
                    _ => w
                        .machine_mut()
                        .set_msi_control(dev, ctl & 0x80 != 0, (ctl >> 4) & 7)
                        .map(|()| Vec::new()),
                };
                for outcome in released.unwrap_or_default() {
                    let d = Delivery {
                        outcome,
                        handled: Vec::new(),
                    };
                    judge(
                        &w,
                        &targets,
                        Some(vm),
                        MsiMessage::default(),
                        &d,
                        before,
                        &mut report,
                    )?;
                }
            }
        }
    }
    Ok(report)
}

/// Builders for seed inputs.
pub mod seed {
    use super::*;

    /// Header: mode and the requested-irq masks of both VMs.
    pub fn header(enc: &mut Encoder, remapped: bool, requested: [u16; 2]) {
        enc.u8(u8::from(remapped))
            .u16(requested[0])
            .u16(requested[1]);
    }

    /// Forge into `device` (0 = a, 1 = b) of VM `vm` at slot (`kind` 0..4, `index`) a message of
    /// `style` (0..8, see the body) with `fields` as its input bytes.
    pub fn forge(
        enc: &mut Encoder,
        vm: usize,
        device: u8,
        kind: u8,
        index: u8,
        style: u8,
        fields: &[u8],
    ) {
        enc.u8(((vm as u8) & 1) << 7)
            .u8(device)
            .u8(kind)
            .u8(index)
            .u8(style)
            .bytes(fields);
    }

    /// Raw bytes into a storage region, then a fire of (`kind`, `index`).
    #[allow(clippy::too_many_arguments)]
    pub fn raw_storage(
        enc: &mut Encoder,
        vm: usize,
        device: u8,
        region: u8,
        offset: u8,
        bytes: [u8; 8],
        len: u8,
        kind: u8,
        index: u8,
    ) {
        enc.u8(((vm as u8) & 1) << 7 | 4)
            .u8(device)
            .u8(region)
            .u8(offset)
            .bytes(&bytes)
            .u8(len.saturating_sub(1))
            .u8(kind)
            .u8(index);
    }

    /// A DMA write with requester id selector `rid` (0..5: the four devices' ids, then 0x0008,
    /// which no VM has) and a message of `style`.
    pub fn dma(enc: &mut Encoder, vm: usize, rid: u8, style: u8, fields: &[u8]) {
        enc.u8(((vm as u8) & 1) << 7 | 5)
            .u8(rid)
            .u8(style)
            .bytes(fields);
    }

    /// A guest action on its `irq`-th irq: 0 request, 1 free, 2 set affinity to `cpu`.
    pub fn guest(enc: &mut Encoder, vm: usize, irq: u8, action: u8, cpu: u8) {
        enc.u8(((vm as u8) & 1) << 7 | 6).u8(irq).u8(action).u8(cpu);
    }

    /// A storage control on `device`.
    pub fn control(enc: &mut Encoder, vm: usize, device: u8, ctl: u8, kind: u8, index: u8) {
        enc.u8(((vm as u8) & 1) << 7 | 7)
            .u8(device)
            .u8(ctl)
            .u8(kind)
            .u8(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(build: impl FnOnce(&mut Encoder)) -> StorageReport {
        let mut enc = Encoder::new();
        build(&mut enc);
        hostile_storage(&enc.finish()).unwrap_or_else(|f| panic!("finding: {f}"))
    }

    #[test]
    fn the_other_vms_message_is_blocked_in_both_modes() {
        // VIR-SEC-H-001: VM 1's MSI-X 0 message written into VM 0's MSI-X 0 and fired.
        for remapped in [false, true] {
            let r = run(|e| {
                seed::header(e, remapped, [0xffff, 0xffff]);
                seed::forge(e, 0, 1, 1, 0, 3, &[10]);
            });
            assert_eq!(r.forged_tried, 1);
            assert_eq!(r.blocked, 1, "remapped = {remapped}");
            assert_eq!(r.delivered_outside, 0);
        }
    }

    #[test]
    fn a_compat_message_is_blocked() {
        // VIR-DISC-H-001: compatibility format blocked (CFI clear) — to APIC 0, vector 0x41.
        let r = run(|e| {
            seed::header(e, false, [0xffff, 0xffff]);
            seed::forge(e, 1, 0, 2, 1, 5, &[0, 0, 0x41]);
            // A DMA write from requester id 0x0008 (no VM's) to APIC 1, vector 0x30.
            seed::dma(e, 0, 4, 5, &[0x01, 0x00, 0x30]);
        });
        assert_eq!((r.forged_tried, r.blocked), (2, 2));
    }

    #[test]
    fn the_own_message_lands_on_the_own_target() {
        // The writer's own issued message re-written into its own slot is delivered, to a
        // target it set up (VIR-SEC-H-003 bounds, not a block).
        let r = run(|e| {
            seed::header(e, false, [0xffff, 0xffff]);
            // MSI-X entry 0's message is the 11th issued (irq order of `set_up`): write it back
            // into MSI-X entry 0.
            seed::forge(e, 0, 1, 1, 0, 4, &[10]);
        });
        assert_eq!((r.forged_tried, r.delivered_own), (1, 1));
    }
}
