//! Invariants of a reference host over the mock backends, checked after every fuzzed step.
//!
//! [`check_host`] compares the host's bookkeeping with what the physical side actually holds:
//! the raw IRTEs of the shared table, the routes of the routing mock and the IRQs of the VFIO
//! mock. Each violation names the requirement it breaks.

use core::fmt;

use vir_abi::hw::vtd::{Irte, Svt};
use vir_abi::hw::{ApicMode, IrteRaw};
use vir_host::testing::MockHost;
use vir_host::{IrMode, SourceValidation, VectorState, VmId};

/// A broken invariant of the host state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvariantViolation {
    /// An IRTE index belongs to two allocations, or lies outside the table (VIR-SEC-H-007).
    EntryShared {
        /// The table index.
        index: u32,
    },
    /// An entry outside every allocation is not zero (free entries are not present;
    /// VIR-SEC-H-002, VIR-FRE-H-002).
    FreeEntryNotZero {
        /// The table index.
        index: u32,
        /// Its raw value.
        raw: u128,
    },
    /// The entry of a vector that is not ACTIVE is present (VIR-SEC-H-002).
    InactiveEntryPresent {
        /// The VM.
        vm: VmId,
        /// The allocation handle.
        handle: u32,
        /// The table index.
        index: u32,
    },
    /// A reserved vector's entry is not `not present, FPD = 1` (VIR-ACT-H-011).
    ReservedEntryWrong {
        /// The VM.
        vm: VmId,
        /// The table index.
        index: u32,
        /// Its raw value.
        raw: u128,
    },
    /// An ACTIVE vector's entry is not present, does not decode, or is not the entry the host
    /// recorded (VIR-FMT-H-003).
    ActiveEntryWrong {
        /// The VM.
        vm: VmId,
        /// The table index.
        index: u32,
        /// Its raw value.
        raw: u128,
    },
    /// An ACTIVE entry's source check is not SVT/SQ/SID of its device (VIR-SEC-H-001).
    SourceCheckWrong {
        /// The VM.
        vm: VmId,
        /// The table index.
        index: u32,
        /// SVT found.
        svt: Svt,
        /// SQ found.
        sq: u8,
        /// SID found.
        sid: u16,
    },
    /// An ACTIVE entry targets something other than the vector's vCPU (posted: its descriptor and
    /// the guest vector; remapped: the host vector of its IRQ) (VIR-SEC-H-003, VIR-FMT-H-003).
    TargetWrong {
        /// The VM.
        vm: VmId,
        /// The table index.
        index: u32,
    },
    /// A present entry accepts the requester id of a device of another VM (VIR-SEC-H-012).
    AcceptsForeignDevice {
        /// The table index.
        index: u32,
        /// The foreign requester id it accepts.
        requester_id: u16,
    },
    /// An ACTIVE vector has no route to its vCPU and guest vector in its own VM, or no started
    /// IRQ of its own device and VM (VIR-ACT-H-006, VIR-SEC-H-003).
    BackendMissing {
        /// The VM.
        vm: VmId,
        /// The table index.
        index: u32,
    },
    /// The backends hold routes or IRQs that no ACTIVE vector accounts for (leaks:
    /// VIR-DEA-H-002, VIR-SEC-H-005).
    BackendLeak {
        /// Routes held.
        routes: usize,
        /// IRQs started.
        irqs: usize,
        /// ACTIVE vectors of all VMs.
        active: usize,
    },
    /// The host named an unknown route, IRQ or table index to a backend.
    BackendMisuse {
        /// Invalid table writes.
        table: u64,
        /// Invalid routing calls.
        routing: u64,
        /// Invalid IRQ calls.
        irqs: u64,
    },
    /// A VM's IRTE or vector count disagrees with its allocations, or exceeds its quota
    /// (VIR-QUO-H-001, VIR-SEC-H-008).
    QuotaAccounting {
        /// The VM.
        vm: VmId,
        /// IRTEs the host says it holds.
        irtes_used: u32,
        /// IRTEs its allocations cover.
        irtes_counted: u32,
        /// Vectors the host says it holds.
        vectors_used: u32,
        /// ACTIVE vectors counted.
        vectors_counted: u32,
    },
    /// The table's free count disagrees with the allocations of all VMs.
    TableAccounting {
        /// Free entries the host reports.
        free: u32,
        /// Entries covered by allocations.
        allocated: u32,
    },
    /// An allocation's entries are not a naturally aligned run of its count (VIR-FMT-H-007).
    Misaligned {
        /// The VM.
        vm: VmId,
        /// The allocation handle.
        handle: u32,
        /// Its first entry.
        base: u32,
    },
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for InvariantViolation {}

/// Check every invariant of `host`; the first violation found is returned.
pub fn check_host(host: &MockHost) -> Result<(), InvariantViolation> {
    let table = host.table().entries();
    let size = table.len();
    let mut owner = vec![false; size];
    let apic_mode = host.config().apic_mode;
    let posted = host.config().ir_mode == IrMode::Posted;
    let mut active_total = 0usize;
    let mut allocated_total = 0u32;
    let foreign_rids: Vec<(VmId, u16, SourceValidation)> = host
        .vm_ids()
        .filter_map(|id| host.vm(id).map(|v| (id, v)))
        .flat_map(|(id, v)| {
            v.config()
                .devices
                .iter()
                .map(move |d| (id, d.requester_id, d.source_validation))
        })
        .collect();

    for vm_id in host.vm_ids() {
        let Some(vm) = host.vm(vm_id) else { continue };
        let mut irtes = 0u32;
        let mut vectors = 0u32;
        for (handle, alloc) in vm.allocations() {
            let count = alloc.count();
            if alloc.base % count != 0 {
                return Err(InvariantViolation::Misaligned {
                    vm: vm_id,
                    handle,
                    base: alloc.base,
                });
            }
            irtes += count;
            let Some(dev) = vm.device(alloc.device_id) else {
                return Err(InvariantViolation::BackendMissing {
                    vm: vm_id,
                    index: alloc.base,
                });
            };
            for (sub, state) in alloc.vectors.iter().enumerate() {
                let index = alloc.base + sub as u32;
                let Some(slot) = owner.get_mut(index as usize) else {
                    return Err(InvariantViolation::EntryShared { index });
                };
                if *slot {
                    return Err(InvariantViolation::EntryShared { index });
                }
                *slot = true;
                let raw = table[index as usize];
                let present = IrteRaw::from_u128(raw).present();
                match state {
                    VectorState::Allocated => {
                        if present || raw != 0 {
                            return Err(InvariantViolation::InactiveEntryPresent {
                                vm: vm_id,
                                handle,
                                index,
                            });
                        }
                    }
                    VectorState::Reserved => {
                        if present {
                            return Err(InvariantViolation::InactiveEntryPresent {
                                vm: vm_id,
                                handle,
                                index,
                            });
                        }
                        if !IrteRaw::from_u128(raw).fpd() {
                            return Err(InvariantViolation::ReservedEntryWrong {
                                vm: vm_id,
                                index,
                                raw,
                            });
                        }
                    }
                    VectorState::Active(a) => {
                        vectors += 1;
                        let wrong = InvariantViolation::ActiveEntryWrong {
                            vm: vm_id,
                            index,
                            raw,
                        };
                        if !present || raw != a.irte {
                            return Err(wrong);
                        }
                        let Ok(irte) = Irte::decode(raw, apic_mode) else {
                            return Err(wrong);
                        };
                        check_source(vm_id, index, &irte, dev.requester_id, dev.source_validation)?;
                        check_target(host, vm_id, index, &irte, a, posted, apic_mode)?;
                        check_backends(host, vm_id, index, a, dev.requester_id)?;
                        // VIR-SEC-H-012: no foreign device passes this entry's check.
                        for &(other, rid, sv) in &foreign_rids {
                            if other == vm_id {
                                continue;
                            }
                            for carried in carried_ids(rid, sv) {
                                if irte.sid_matches(carried) {
                                    return Err(InvariantViolation::AcceptsForeignDevice {
                                        index,
                                        requester_id: carried,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        if irtes != vm.irtes_used()
            || vectors != vm.vectors_used()
            || irtes > vm.config().quotas.irtes
            || vectors > vm.config().quotas.vectors
        {
            return Err(InvariantViolation::QuotaAccounting {
                vm: vm_id,
                irtes_used: vm.irtes_used(),
                irtes_counted: irtes,
                vectors_used: vm.vectors_used(),
                vectors_counted: vectors,
            });
        }
        active_total += vectors as usize;
        allocated_total += irtes;
    }
    for (index, (&raw, &owned)) in table.iter().zip(&owner).enumerate() {
        if !owned && raw != 0 {
            return Err(InvariantViolation::FreeEntryNotZero {
                index: index as u32,
                raw,
            });
        }
    }
    if host.table_free() + allocated_total != size as u32 {
        return Err(InvariantViolation::TableAccounting {
            free: host.table_free(),
            allocated: allocated_total,
        });
    }
    let routes = host.routing().routes().len();
    let irqs = host.irqs().irqs().len();
    if routes != active_total || irqs != active_total {
        return Err(InvariantViolation::BackendLeak {
            routes,
            irqs,
            active: active_total,
        });
    }
    let misuse = (
        host.table().invalid_writes(),
        host.routing().invalid_calls(),
        host.irqs().invalid_calls(),
    );
    if misuse != (0, 0, 0) {
        return Err(InvariantViolation::BackendMisuse {
            table: misuse.0,
            routing: misuse.1,
            irqs: misuse.2,
        });
    }
    Ok(())
}

/// The requester ids a device's requests can carry: its own, or any id on its bridge's buses.
fn carried_ids(rid: u16, sv: SourceValidation) -> Vec<u16> {
    match sv {
        SourceValidation::RequesterId => vec![rid],
        SourceValidation::BusRange { start_bus, end_bus } => (start_bus..=end_bus)
            .flat_map(|bus| [0u16, 0x08, 0xff].map(|devfn| u16::from(bus) << 8 | devfn))
            .collect(),
    }
}

fn check_source(
    vm: VmId,
    index: u32,
    irte: &Irte,
    rid: u16,
    sv: SourceValidation,
) -> Result<(), InvariantViolation> {
    let (svt, sq, sid) = match irte {
        Irte::Remapped(r) => (r.svt, r.sq, r.sid),
        Irte::Posted(p) => (p.svt, p.sq, p.sid),
    };
    // VIR-SEC-H-001: SVT=1, SQ=0, SID = requester id; or SVT=2 with the bridge's bus range
    // encoded start:end (VIR-FMT-H-004).
    let expected = match sv {
        SourceValidation::RequesterId => (Svt::VerifySid, 0, rid),
        SourceValidation::BusRange { start_bus, end_bus } => (
            Svt::VerifyBus,
            0,
            u16::from(start_bus) << 8 | u16::from(end_bus),
        ),
    };
    if (svt, sq, sid) != expected {
        return Err(InvariantViolation::SourceCheckWrong {
            vm,
            index,
            svt,
            sq,
            sid,
        });
    }
    Ok(())
}

fn check_target(
    host: &MockHost,
    vm_id: VmId,
    index: u32,
    irte: &Irte,
    a: &vir_host::ActiveVector,
    posted: bool,
    apic_mode: ApicMode,
) -> Result<(), InvariantViolation> {
    let wrong = InvariantViolation::TargetWrong { vm: vm_id, index };
    let Some(vm) = host.vm(vm_id) else {
        return Err(wrong);
    };
    let Some((vcpu_index, vcpu)) = vm.vcpu_by_apic_id(a.target.apic_id) else {
        return Err(wrong);
    };
    if vcpu_index != a.vcpu_index {
        return Err(wrong);
    }
    let ok = match (irte, posted) {
        (Irte::Posted(p), true) => {
            p.present && !p.urgent && p.vector == a.target.vector && p.pda == vcpu.pda
        }
        (Irte::Remapped(r), false) => {
            let dest_ok = match apic_mode {
                ApicMode::X2Apic => r.dest == a.host_irq.vector.apic_id,
                ApicMode::XApic => r.dest == a.host_irq.vector.apic_id & 0xff,
            };
            r.present
                && !r.dest_mode_logical
                && !r.redirection_hint
                && !r.trigger_level
                && r.delivery_mode == 0
                && r.vector == a.host_irq.vector.vector
                && dest_ok
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(wrong) }
}

fn check_backends(
    host: &MockHost,
    vm_id: VmId,
    index: u32,
    a: &vir_host::ActiveVector,
    rid: u16,
) -> Result<(), InvariantViolation> {
    let missing = InvariantViolation::BackendMissing { vm: vm_id, index };
    let route = host.routing().route(vm_id, a.gsi).ok_or(missing)?;
    if route.vcpu_index != a.vcpu_index
        || route.apic_id != a.target.apic_id
        || route.vector != a.target.vector
    {
        return Err(missing);
    }
    let irq = host.irqs().irq(a.host_irq.id).ok_or(missing)?;
    if irq.vm != vm_id
        || irq.gsi != a.gsi
        || irq.source.requester_id != rid
        || irq.vector != a.host_irq.vector
        || irq.pending.is_some()
    {
        return Err(missing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{DEV_MAIN, World, WorldConfig};
    use vir_abi::feature::Features;
    use vir_abi::wire::StorageKind;
    use vir_host::testing::Caller;

    #[test]
    fn a_fresh_and_a_busy_world_satisfy_every_invariant() {
        let mut w = World::new(WorldConfig::default());
        assert_eq!(check_host(&w.host), Ok(()));
        let c = Caller::new(w.vm(0));
        c.negotiate(&mut w.host, &w.mems[0], 1, Features::V1_DEFINED)
            .unwrap();
        let a = c
            .allocate(&mut w.host, &w.mems[0], DEV_MAIN, StorageKind::MSI, 2, 0)
            .unwrap();
        let h = a.handle.get();
        c.reserve(&mut w.host, &w.mems[0], h, 1).unwrap();
        c.activate(&mut w.host, &w.mems[0], h, 0, 1, 0x40).unwrap();
        assert_eq!(check_host(&w.host), Ok(()));
    }

    #[test]
    fn a_corrupted_entry_is_reported() {
        // VIR-SEC-H-002: a present entry nobody owns.
        let mut w = World::new(WorldConfig::default());
        use vir_host::IrteTable;
        w.host.table_mut().write(vir_host::IrteTableId::Unit, 5, 1);
        assert_eq!(
            check_host(&w.host),
            Err(InvariantViolation::FreeEntryNotZero { index: 5, raw: 1 })
        );
    }

    #[test]
    fn a_wrong_source_id_is_reported() {
        // VIR-SEC-H-001: rewrite an active entry with SID of the other VM's device.
        let mut w = World::new(WorldConfig::default());
        let c = Caller::new(w.vm(0));
        c.negotiate(&mut w.host, &w.mems[0], 1, Features::V1_DEFINED)
            .unwrap();
        let a = c
            .allocate(&mut w.host, &w.mems[0], DEV_MAIN, StorageKind::MSIX, 0, 3)
            .unwrap();
        c.activate(&mut w.host, &w.mems[0], a.handle.get(), 0, 0, 0x40)
            .unwrap();
        let vm = w.host.vm(w.vm(0)).unwrap();
        let (_, alloc) = vm.allocations().next().unwrap();
        let base = alloc.base;
        let VectorState::Active(av) = alloc.vectors[0] else {
            panic!("active")
        };
        // Same entry with SID bits 79:64 replaced by 0x3b00 (VM 1's device). The host's record
        // still holds the old value, so the entry mismatch is what is found first.
        let forged = (av.irte & !(0xffffu128 << 64)) | (0x3b00u128 << 64);
        use vir_host::IrteTable;
        w.host
            .table_mut()
            .write(vir_host::IrteTableId::Unit, base, forged);
        assert_eq!(
            check_host(&w.host),
            Err(InvariantViolation::ActiveEntryWrong {
                vm: w.vm(0),
                index: base,
                raw: forged
            })
        );
    }
}
