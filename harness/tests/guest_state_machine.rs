//! Random driver actions against the reference guest and the reference host together, on the
//! simulated platform (`vir-simvm`), with delivery checked after every action.
//!
//! Two VMs (four and two vCPUs) with MSI, MSI-X, IMS-in-device-memory and IMS-in-system-memory
//! storage. Each case picks posted or remapped delivery and runs a random sequence of driver
//! actions on either guest: allocate vectors of any storage type, `request_irq`, `free_irq`,
//! `free_irq_vectors`, `irq_set_affinity`, CPU hot-unplug and hot-plug. A small model records
//! what each guest should hold (its irqs, which are requested, the messages issued). After every
//! action, on both VMs:
//!
//! * the guest holds exactly the model's irqs and requested irqs: a successful action did what
//!   it says, a failed one changed nothing the driver can see (VIR-STA-G-001, the guest's
//!   rollback);
//! * every requested irq, fired from its device, arrives exactly once at the CPU and vector the
//!   guest expects and maps back to that irq (VIR-ACT-H-006, VIR-AFF-H-004, VIR-AFF-H-008,
//!   VIR-SEC-H-003);
//! * every allocated but not requested source, fired, reaches no vCPU at all (VIR-SEC-H-002);
//! * an allocation's message never changes while it lives (VIR-ACT-H-009, VIR-AFF-H-005), and
//!   affinity changes and hot-unplug write no interrupt storage (VIR-AFF-G-001, spec §5.4 and §8.7);
//! * after a hot-unplug no requested irq stays on the offline CPU unless the guest reported it
//!   as failed to migrate (VIR-IRQ-G-001).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use vir_abi::hw::msi::MsiMessage;
use vir_guest::{
    AllocRequest, CpuId, CpuMask, DeviceId as GuestDeviceId, Irq, IrqState, StorageType,
};
use vir_host::{IrMode, Quotas};
use vir_platform::{FireOutcome, RequesterId};
use vir_simvm::{DeviceSpec, VmSpec, World, WorldBuilder};

const NIC: GuestDeviceId = GuestDeviceId::new(0, 0x18);
const ACC: GuestDeviceId = GuestDeviceId::new(0, 0x20);
const OLD: GuestDeviceId = GuestDeviceId::new(0, 0x28);
const VCPUS: [u32; 2] = [4, 2];

fn world(mode: IrMode) -> World {
    WorldBuilder::new()
        .mode(mode)
        .pcpus(4)
        .vectors_per_pcpu(24)
        .vm(VmSpec::new(vec![0, 1, 2, 3])
            .with_quotas(Quotas {
                irtes: 16,
                vectors: 8,
            })
            .with_device(DeviceSpec::new("nic", NIC, 0x8100).with_msix(8))
            .with_device(
                DeviceSpec::new("acc", ACC, 0x8200)
                    .with_ims_device(8)
                    .with_ims_system(4),
            )
            .with_device(DeviceSpec::new("old", OLD, 0x8300).with_msi(2)))
        .vm(VmSpec::new(vec![0, 9]).with_device(DeviceSpec::new("nic", NIC, 0x9100).with_msix(4)))
        .build()
        .expect("the world builds")
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// Allocate: storage 0 MSI (`n` = 1, 2 or 4 vectors), 1 MSI-X, 2 IMS device, 3 IMS system
    /// (`n` entries from `start`).
    Alloc {
        vm: usize,
        storage: u8,
        start: u32,
        n: u32,
    },
    Request {
        vm: usize,
        pick: usize,
    },
    Free {
        vm: usize,
        pick: usize,
    },
    FreeVectors {
        vm: usize,
        storage: u8,
    },
    SetAffinity {
        vm: usize,
        pick: usize,
        cpu: u32,
    },
    Offline {
        vm: usize,
        cpu: u32,
    },
    Online {
        vm: usize,
        cpu: u32,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let vm = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    prop_oneof![
        4 => (vm.clone(), 0u8..4, 0u32..8, 1u32..4)
            .prop_map(|(vm, storage, start, n)| Action::Alloc { vm, storage, start, n }),
        6 => (vm.clone(), any::<usize>()).prop_map(|(vm, pick)| Action::Request { vm, pick }),
        2 => (vm.clone(), any::<usize>()).prop_map(|(vm, pick)| Action::Free { vm, pick }),
        1 => (vm.clone(), 0u8..4).prop_map(|(vm, storage)| Action::FreeVectors { vm, storage }),
        4 => (vm.clone(), any::<usize>(), 0u32..4)
            .prop_map(|(vm, pick, cpu)| Action::SetAffinity { vm, pick, cpu }),
        1 => (vm.clone(), 0u32..4).prop_map(|(vm, cpu)| Action::Offline { vm, cpu }),
        1 => (vm, 0u32..4).prop_map(|(vm, cpu)| Action::Online { vm, cpu }),
    ]
}

fn storage(s: u8) -> (GuestDeviceId, StorageType) {
    match s % 4 {
        0 => (OLD, StorageType::Msi),
        1 => (NIC, StorageType::MsiX),
        2 => (ACC, StorageType::ImsDevice),
        _ => (ACC, StorageType::ImsSystem),
    }
}

/// What a guest should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GuestModel {
    /// Every allocated irq, with its (device, storage type).
    irqs: BTreeMap<Irq, (GuestDeviceId, StorageType)>,
    /// The requested ones.
    requested: BTreeSet<Irq>,
    /// The message of each irq, once issued.
    messages: BTreeMap<Irq, MsiMessage>,
}

fn pick(v: &[Irq], i: usize) -> Option<Irq> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

/// The guest's own view: its irqs and the requested ones.
fn view(w: &World, vm: usize) -> (BTreeSet<Irq>, BTreeSet<Irq>) {
    let g = w.vm(vm).expect("VM").guest();
    let irqs: BTreeSet<Irq> = g.irqs().collect();
    let requested = irqs
        .iter()
        .copied()
        .filter(|&i| {
            matches!(
                g.irq_info(i).map(|x| x.state),
                Some(IrqState::Active { .. })
            )
        })
        .collect();
    (irqs, requested)
}

fn apply(w: &mut World, models: &mut [GuestModel; 2], a: Action) {
    let vm = match a {
        Action::Alloc { vm, .. }
        | Action::Request { vm, .. }
        | Action::Free { vm, .. }
        | Action::FreeVectors { vm, .. }
        | Action::SetAffinity { vm, .. }
        | Action::Offline { vm, .. }
        | Action::Online { vm, .. } => vm,
    };
    let m = &mut models[vm];
    let before = view(w, vm);
    let writes = w.storage_writes(vm).expect("VM");
    let all: Vec<Irq> = m.irqs.keys().copied().collect();
    let requested: Vec<Irq> = m.requested.iter().copied().collect();
    let g = w.guest_mut(vm).expect("VM");
    let ok = match a {
        Action::Alloc {
            storage: s,
            start,
            n,
            ..
        } => {
            let (dev, ty) = storage(s);
            let indices: Vec<u32> = (start..start + n).collect();
            let req = match ty {
                StorageType::Msi => AllocRequest::Msi {
                    nvec: 1 << (n.min(3) - 1),
                },
                StorageType::MsiX => AllocRequest::MsiX { indices: &indices },
                StorageType::ImsDevice => AllocRequest::ImsDevice { indices: &indices },
                StorageType::ImsSystem => AllocRequest::ImsSystem { indices: &indices },
            };
            match g.alloc_irq_vectors(dev, req, None) {
                Ok(irqs) => {
                    for i in irqs {
                        assert!(m.irqs.insert(i, (dev, ty)).is_none(), "{i:?} reused");
                    }
                    true
                }
                Err(_) => false,
            }
        }
        Action::Request { pick: p, .. } => {
            let Some(irq) = pick(&all, p) else { return };
            let ok = g.request_irq(irq).is_ok();
            if ok {
                m.requested.insert(irq);
            }
            ok
        }
        Action::Free { pick: p, .. } => {
            let Some(irq) = pick(&requested, p) else {
                return;
            };
            let report = g.free_irq(irq).expect("free_irq of a requested irq");
            // DEACTIVATE cannot fail on the reference host (VIR-DEA-H-001..003).
            assert!(report.is_clean(), "{report:?}");
            m.requested.remove(&irq);
            true
        }
        Action::FreeVectors { storage: s, .. } => {
            let (dev, ty) = storage(s);
            match g.free_irq_vectors(dev, ty) {
                Ok(report) => {
                    assert!(report.is_clean(), "{report:?}");
                    let gone: Vec<Irq> = m
                        .irqs
                        .iter()
                        .filter(|(_, dt)| **dt == (dev, ty))
                        .map(|(&i, _)| i)
                        .collect();
                    for i in gone {
                        m.irqs.remove(&i);
                        m.messages.remove(&i);
                    }
                    true
                }
                Err(_) => false,
            }
        }
        Action::SetAffinity { pick: p, cpu, .. } => {
            let Some(irq) = pick(&all, p) else { return };
            let ok = g.set_affinity(irq, &CpuMask::single(CpuId(cpu))).is_ok();
            // VIR-AFF-G-001: an affinity change writes no storage.
            assert_eq!(
                w.storage_writes(vm).expect("VM"),
                writes,
                "set_affinity wrote storage"
            );
            ok
        }
        Action::Offline { cpu, .. } => {
            let result = g.cpu_offline(CpuId(cpu));
            let ok = result.is_ok();
            if let Ok(report) = result {
                let failed: BTreeSet<Irq> = report.failed.iter().map(|(i, _)| *i).collect();
                let g = w.vm(vm).expect("VM").guest();
                for irq in g.irqs() {
                    if let Some(IrqState::Active { cpu: c, .. }) = g.irq_info(irq).map(|x| x.state)
                    {
                        assert!(
                            c != CpuId(cpu) || failed.contains(&irq),
                            "VIR-IRQ-G-001: {irq:?} left on offline CPU {cpu}"
                        );
                    }
                }
            }
            // Hot-unplug moves vectors with SET_AFFINITY only (B12).
            assert_eq!(
                w.storage_writes(vm).expect("VM"),
                writes,
                "hot-unplug wrote storage"
            );
            ok
        }
        Action::Online { cpu, .. } => g.cpu_online(CpuId(cpu)).is_ok(),
    };
    let after = view(w, vm);
    if !ok {
        assert_eq!(after, before, "{a:?} failed but changed the guest's irqs");
    }
    assert_eq!(
        after,
        (m.irqs.keys().copied().collect(), m.requested.clone()),
        "after {a:?}"
    );
}

fn check(w: &mut World, models: &mut [GuestModel; 2]) {
    for (vm, m) in models.iter_mut().enumerate() {
        // Requested irqs arrive where the guest expects them.
        let tally = w.check_all(vm).expect("VM");
        assert!(tally.all_correct(), "VM {vm}: {:?}", tally.failures);
        assert_eq!(tally.checked as usize, m.requested.len());
        // Messages are stable for the life of the allocation.
        let g = w.vm(vm).expect("VM").guest();
        for &irq in m.irqs.keys() {
            if let Some(msg) = g.irq_info(irq).and_then(|x| x.message) {
                let first = *m.messages.entry(irq).or_insert(msg);
                assert_eq!(first, msg, "VIR-ACT-H-009: message of {irq:?} changed");
            }
        }
        // Allocated but not requested sources reach nobody: their message, written by the
        // device's requester id (as DMA, so that no pending state is left in the device), is
        // blocked by the remapping unit (VIR-SEC-H-002).
        let idle: Vec<Irq> = m
            .irqs
            .keys()
            .copied()
            .filter(|i| !m.requested.contains(i))
            .collect();
        for irq in idle {
            let Some((device, slot)) = w.source_of(vm, irq) else {
                continue;
            };
            let rid = w
                .vm(vm)
                .expect("VM")
                .devices()
                .iter()
                .find(|d| d.device == device)
                .map(|d| d.spec.requester_id)
                .expect("the irq's device");
            let msg = w
                .machine()
                .stored_message(device, slot)
                .expect("stored message");
            let d = w.inject_write(RequesterId(rid), msg);
            assert!(
                matches!(d.outcome, FireOutcome::Faulted(_)) && d.handled.is_empty(),
                "VIR-SEC-H-002: idle {irq:?} of VM {vm} ({msg:x?}) delivered: {d:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// VIR-ACT-H-006/009, VIR-AFF-H-004/005/008, VIR-AFF-G-001, VIR-IRQ-G-001, VIR-SEC-H-002/003,
    /// VIR-STA-G-001: driver actions on two guests keep every delivery correct.
    #[test]
    fn driver_actions_keep_delivery_correct(
        remapped in any::<bool>(),
        actions in proptest::collection::vec(action(), 1..60),
    ) {
        let mode = if remapped { IrMode::Remapped } else { IrMode::Posted };
        let mut w = world(mode);
        let mut models: [GuestModel; 2] = Default::default();
        for a in actions {
            apply(&mut w, &mut models, a);
            check(&mut w, &mut models);
        }
        // Both VMs' CPUs are as many as configured; hot-plug never invents one.
        for (vm, &n) in VCPUS.iter().enumerate() {
            prop_assert_eq!(w.vm(vm).expect("VM").guest().nr_cpus(), n);
        }
    }
}

#[test]
fn a_fixed_sequence_exercises_every_action() {
    // Allocation, request, move, hot-unplug and teardown of each storage type, in both modes
    // (the same checks as the property, on a sequence that is known to reach every branch).
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut w = world(mode);
        let mut models: [GuestModel; 2] = Default::default();
        let seq = [
            Action::Alloc {
                vm: 0,
                storage: 0,
                start: 0,
                n: 3,
            },
            Action::Alloc {
                vm: 0,
                storage: 1,
                start: 0,
                n: 3,
            },
            Action::Alloc {
                vm: 0,
                storage: 2,
                start: 2,
                n: 2,
            },
            Action::Alloc {
                vm: 0,
                storage: 3,
                start: 0,
                n: 2,
            },
            Action::Alloc {
                vm: 1,
                storage: 1,
                start: 0,
                n: 2,
            },
            Action::Request { vm: 0, pick: 0 },
            Action::Request { vm: 0, pick: 4 },
            Action::Request { vm: 0, pick: 7 },
            Action::Request { vm: 0, pick: 9 },
            Action::Request { vm: 1, pick: 1 },
            Action::SetAffinity {
                vm: 0,
                pick: 4,
                cpu: 3,
            },
            Action::Offline { vm: 0, cpu: 3 },
            Action::Offline { vm: 1, cpu: 1 },
            Action::Online { vm: 0, cpu: 3 },
            // Requested: MSI 0, MSI-X 0, IMS device 2, IMS system 0 (irqs 0, 4, 7, 9).
            Action::Free { vm: 0, pick: 0 },
            Action::Request { vm: 0, pick: 0 },
            Action::Free { vm: 0, pick: 3 },
            Action::FreeVectors { vm: 0, storage: 3 },
        ];
        for a in seq {
            apply(&mut w, &mut models, a);
            check(&mut w, &mut models);
        }
        assert_eq!(
            models[0].irqs.len(),
            4 + 3 + 2,
            "MSI 4, MSI-X 3, IMS device 2"
        );
        assert_eq!(models[0].requested.len(), 3);
        assert_eq!(models[1].requested.len(), 1);
    }
}
