//! Forged messages in device storage never reach a vCPU they should not (B17).
//!
//! Two VMs share one machine and its remapping unit. A message written into a device's storage
//! — another device's, another VM's, a freed one, a reserved one, or random bits — goes through
//! the IOMMU with that device's requester id. The IRTE's source check (SVT = 1, SQ = 0, SID =
//! requester id, VIR-SEC-H-001), not-present entries for everything not active
//! (VIR-SEC-H-002, FPD = 1 for reservations), per-VM handles (VIR-SEC-H-004) and targets only
//! among the VM's own vCPUs (VIR-SEC-H-003) mean it is blocked — and recorded, except on a
//! reserved entry where FPD suppresses the record — or, at most, delivered to the writing
//! device's own VM.
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{RemappableMsi, VtdFaultReason};
use vir_guest::{AllocRequest, DeviceId as GuestDeviceId, Irq, StorageType};
use vir_host::IrMode;
use vir_platform::iommu::RemapFault;
use vir_platform::{DeviceId, FireOutcome, StorageSlot};
use vir_simvm::scenario::SplitMix64;
use vir_simvm::{DeviceSpec, VmSpec, World, WorldBuilder};

const NIC: GuestDeviceId = GuestDeviceId::new(0, 0x18);
const ACCEL: GuestDeviceId = GuestDeviceId::new(0, 0x20);
const OLD: GuestDeviceId = GuestDeviceId::new(0, 0x28);

struct Setup {
    world: World,
    /// VM 0: requested NIC irqs, requested accelerator irqs, reserved accelerator irqs.
    nic0: Vec<Irq>,
    accel_active: Vec<Irq>,
    accel_reserved: Vec<Irq>,
    /// Messages of VM 0's freed device.
    freed: Vec<MsiMessage>,
    /// VM 1: its NIC (same guest id as VM 0's, another physical device).
    nic1: Vec<Irq>,
}

fn alloc(w: &mut World, vm: usize, dev: GuestDeviceId, t: StorageType, idx: &[u32]) -> Vec<Irq> {
    let req = match t {
        StorageType::MsiX => AllocRequest::MsiX { indices: idx },
        StorageType::ImsDevice => AllocRequest::ImsDevice { indices: idx },
        other => panic!("{other:?}"),
    };
    w.guest_mut(vm)
        .unwrap()
        .alloc_irq_vectors(dev, req, None)
        .unwrap()
}

fn request(w: &mut World, vm: usize, irqs: &[Irq]) {
    for &i in irqs {
        w.guest_mut(vm).unwrap().request_irq(i).unwrap();
    }
}

fn setup(mode: IrMode) -> Setup {
    let mut world = WorldBuilder::new()
        .mode(mode)
        .vm(VmSpec::new(vec![0, 1, 256, 511])
            .with_device(DeviceSpec::new("nic", NIC, 0x8100).with_msix(8))
            .with_device(DeviceSpec::new("accel", ACCEL, 0x8200).with_ims_device(8))
            .with_device(DeviceSpec::new("old", OLD, 0x8300).with_msix(2)))
        .vm(VmSpec::new(vec![0, 300]).with_device(DeviceSpec::new("nic", NIC, 0x9100).with_msix(8)))
        .build()
        .unwrap();
    let nic0 = alloc(
        &mut world,
        0,
        NIC,
        StorageType::MsiX,
        &[0, 1, 2, 3, 4, 5, 6, 7],
    );
    request(&mut world, 0, &nic0);
    let accel_active = alloc(&mut world, 0, ACCEL, StorageType::ImsDevice, &[0, 1, 2, 3]);
    request(&mut world, 0, &accel_active);
    let accel_reserved = alloc(&mut world, 0, ACCEL, StorageType::ImsDevice, &[4, 5, 6, 7]);
    let old = alloc(&mut world, 0, OLD, StorageType::MsiX, &[0, 1]);
    request(&mut world, 0, &old);
    let nic1 = alloc(
        &mut world,
        1,
        NIC,
        StorageType::MsiX,
        &[0, 1, 2, 3, 4, 5, 6, 7],
    );
    request(&mut world, 1, &nic1);
    // Freed last, so that no later allocation reuses its entries.
    let freed = old
        .iter()
        .map(|&i| {
            world
                .vm(0)
                .unwrap()
                .guest()
                .irq_info(i)
                .unwrap()
                .message
                .unwrap()
        })
        .collect();
    for &i in &old {
        let report = world.guest_mut(0).unwrap().free_irq(i).unwrap();
        assert!(report.is_clean(), "{report:?}");
    }
    let report = world
        .guest_mut(0)
        .unwrap()
        .free_irq_vectors(OLD, StorageType::MsiX)
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    Setup {
        world,
        nic0,
        accel_active,
        accel_reserved,
        freed,
        nic1,
    }
}

fn message(w: &World, vm: usize, irq: Irq) -> MsiMessage {
    w.vm(vm)
        .unwrap()
        .guest()
        .irq_info(irq)
        .unwrap()
        .message
        .unwrap()
}

fn source(w: &World, vm: usize, irq: Irq) -> (DeviceId, StorageSlot) {
    w.source_of(vm, irq).unwrap()
}

/// Writes `msg` into the storage of `(device, slot)`, fires it, and checks that nothing reached
/// any vCPU and that the unit blocked it with `reason`, recorded or (FPD) not.
fn assert_blocked(
    w: &mut World,
    (device, slot): (DeviceId, StorageSlot),
    msg: MsiMessage,
    reason: VtdFaultReason,
    recorded: bool,
) {
    let accepted = (w.accepted(0).unwrap(), w.accepted(1).unwrap());
    let faults = w.faults();
    w.machine_mut().write_message(device, slot, msg).unwrap();
    let d = w.fire(device, slot).unwrap();
    let index = RemappableMsi::decode(msg).map(|m| m.irte_index()).ok();
    assert_eq!(
        d.outcome,
        FireOutcome::Faulted(RemapFault {
            reason,
            index,
            recorded
        }),
        "{msg:x?}"
    );
    assert_eq!(d.handled, []);
    assert_eq!((w.accepted(0).unwrap(), w.accepted(1).unwrap()), accepted);
    let expect = if recorded {
        (faults.0 + 1, faults.1)
    } else {
        (faults.0, faults.1 + 1)
    };
    assert_eq!(w.faults(), expect);
}

#[test]
fn another_devices_message_is_blocked_and_recorded_vir_sec_h_001() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut s = setup(mode);
        for (&victim, &thief) in s.accel_active.iter().zip(&s.nic0) {
            let msg = message(&s.world, 0, victim);
            let at = source(&s.world, 0, thief);
            assert_blocked(
                &mut s.world,
                at,
                msg,
                VtdFaultReason::SID_CHECK_FAILED,
                true,
            );
        }
        // And the other way round.
        let msg = message(&s.world, 0, s.nic0[7]);
        let at = source(&s.world, 0, s.accel_active[0]);
        assert_blocked(
            &mut s.world,
            at,
            msg,
            VtdFaultReason::SID_CHECK_FAILED,
            true,
        );
        let log = s.world.machine().iommu().faults().last().copied().unwrap();
        assert_eq!(log.requester_id.0, 0x8200);
    }
}

#[test]
fn another_vms_message_is_blocked_and_recorded_vir_sec_h_003_vir_sec_h_004() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut s = setup(mode);
        // The two VMs' NICs have the same guest id and the same storage index.
        for (&a, &b) in s.nic0.iter().zip(&s.nic1) {
            let m0 = message(&s.world, 0, a);
            let m1 = message(&s.world, 1, b);
            assert_ne!(m0, m1);
            let at1 = source(&s.world, 1, b);
            assert_blocked(
                &mut s.world,
                at1,
                m0,
                VtdFaultReason::SID_CHECK_FAILED,
                true,
            );
            let at0 = source(&s.world, 0, a);
            assert_blocked(
                &mut s.world,
                at0,
                m1,
                VtdFaultReason::SID_CHECK_FAILED,
                true,
            );
        }
    }
}

#[test]
fn freed_messages_hit_not_present_entries_vir_fre_h_002_vir_sec_h_002() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut s = setup(mode);
        for msg in s.freed.clone() {
            for at in [
                source(&s.world, 0, s.nic0[0]),
                source(&s.world, 1, s.nic1[0]),
            ] {
                assert_blocked(&mut s.world, at, msg, VtdFaultReason::NOT_PRESENT, true);
            }
        }
    }
}

#[test]
fn reserved_entries_block_silently_with_fpd_vir_sec_h_002() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut s = setup(mode);
        for &irq in &s.accel_reserved.clone() {
            // The device itself, with the message the guest stored at reservation.
            let at = source(&s.world, 0, irq);
            let msg = message(&s.world, 0, irq);
            // VIR-ALC-G-001: the guest keeps the reserved entry masked; the device holds the
            // interrupt pending.
            let d = s.world.fire(at.0, at.1).unwrap();
            assert_eq!(d.outcome, FireOutcome::Masked);
            // Unmasked behind the guest's back (a device ignoring its mask): the pending
            // interrupt goes out and the not-present entry blocks it silently (FPD).
            let faults = s.world.faults();
            let released = s.world.machine_mut().set_masked(at.0, at.1, false).unwrap();
            assert_eq!(
                released,
                [FireOutcome::Faulted(RemapFault {
                    reason: VtdFaultReason::NOT_PRESENT,
                    index: RemappableMsi::decode(msg).map(|m| m.irte_index()).ok(),
                    recorded: false
                })]
            );
            assert_eq!(s.world.faults(), (faults.0, faults.1 + 1));
            assert_blocked(&mut s.world, at, msg, VtdFaultReason::NOT_PRESENT, false);
            // Another VM's device with that message: blocked at P = 0 too, before the SID check.
            let at1 = source(&s.world, 1, s.nic1[1]);
            assert_blocked(&mut s.world, at1, msg, VtdFaultReason::NOT_PRESENT, false);
        }
    }
}

#[test]
fn random_messages_never_reach_another_vms_vcpus_vir_sec_h_001_vir_sec_h_005() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut s = setup(mode);
        let mut rng = SplitMix64::new(0x5eed);
        let entries = s.world.machine().iommu().entries();
        let thieves = [(1, s.nic1[0]), (0, s.nic0[0]), (0, s.accel_active[0])];
        let (mut blocked, mut own) = (0u64, 0u64);
        for i in 0..6000u32 {
            let (vm, thief) = thieves[(i % 3) as usize];
            let other = 1 - vm;
            let msg = if i % 2 == 0 {
                // Random bits.
                let r = rng.next_u64();
                MsiMessage::new(
                    r as u32,
                    if i % 4 == 0 { 0 } else { (r >> 32) as u32 },
                    rng.next_u64() as u32,
                )
            } else {
                // A well-formed remappable message naming a random handle near the table.
                let handle = rng.below(u64::from(entries) + 16) as u16;
                let mut m = RemappableMsi {
                    handle,
                    shv: i % 3 != 0,
                    subhandle: 0,
                }
                .encode();
                m.data = rng.below(4) as u32;
                m
            };
            let accepted_other = s.world.accepted(other).unwrap();
            let (device, slot) = source(&s.world, vm, thief);
            s.world
                .machine_mut()
                .write_message(device, slot, msg)
                .unwrap();
            let d = s.world.fire(device, slot).unwrap();
            assert_eq!(s.world.accepted(other).unwrap(), accepted_other, "{msg:x?}");
            match d.outcome {
                FireOutcome::Faulted(_) => {
                    assert_eq!(d.handled, []);
                    blocked += 1;
                }
                FireOutcome::Delivered { vcpu, .. } => {
                    assert_eq!(vcpu.vm.0 as usize, vm, "{msg:x?}");
                    assert!(d.handled.iter().all(|h| h.vm == Some(vm)), "{d:?}");
                    own += 1;
                }
                FireOutcome::Posted(p) => {
                    assert_eq!(p.owner.map(|o| o.vm.0 as usize), Some(vm), "{msg:x?}");
                    assert!(d.handled.iter().all(|h| h.vm == Some(vm)), "{d:?}");
                    own += 1;
                }
                other => panic!("{msg:x?}: {other:?}"),
            }
        }
        assert_eq!(blocked + own, 6000);
        // Most forgeries are blocked; the few that land hit the writer's own IRTEs.
        assert!(blocked > 5500, "{blocked} blocked, {own} own");
        let (recorded, suppressed) = s.world.faults();
        assert_eq!(recorded + suppressed, blocked);
    }
}
