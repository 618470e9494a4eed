//! The guest masks IMS entries like MSI-X entries (VIR-ALC-G-001): in device memory and in
//! system memory, a slot is masked before its message is written, unmasked at `request_irq`
//! once the message is in place, and masked again at `free_irq` — the message stays in the
//! storage, and if the device fires it, the device holds it pending instead of sending it.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use vir_abi::hw::msi::MsiMessage;
use vir_guest::{
    AllocRequest, DeviceId as GuestDeviceId, InterruptStorage, Irq, StorageError,
    StorageSlot as GuestSlot, StorageType,
};
use vir_host::IrMode;
use vir_platform::device::DeviceConfig;
use vir_platform::{FireOutcome, Machine, MachineConfig, RequesterId, StorageKind, StorageSlot};
use vir_simvm::{DeviceSpec, SharedMachine, SimStorage, Verdict, VmSpec, World, WorldBuilder};

const ACCEL: GuestDeviceId = GuestDeviceId::new(0, 0x20);

fn world(mode: IrMode) -> World {
    WorldBuilder::new()
        .mode(mode)
        .vm(VmSpec::new(vec![0, 1]).with_device(
            DeviceSpec::new("accel", ACCEL, 0x8200)
                .with_ims_device(4)
                .with_ims_system(4),
        ))
        .build()
        .unwrap()
}

fn alloc(w: &mut World, request: AllocRequest<'_>) -> Irq {
    let irqs = w
        .guest_mut(0)
        .unwrap()
        .alloc_irq_vectors(ACCEL, request, None)
        .unwrap();
    assert_eq!(irqs.len(), 1);
    irqs[0]
}

// VIR-ALC-G-001
#[test]
fn vir_alc_g_001_ims_entry_is_masked_until_request_and_after_free_irq() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut w = world(mode);
        for (request, kind, storage) in [
            (
                AllocRequest::ImsDevice { indices: &[2] },
                StorageKind::ImsDevice,
                StorageType::ImsDevice,
            ),
            (
                AllocRequest::ImsSystem { indices: &[3] },
                StorageKind::ImsSystem,
                StorageType::ImsSystem,
            ),
        ] {
            let irq = alloc(&mut w, request);
            let (device, slot) = w.source_of(0, irq).unwrap();
            assert_eq!(slot.kind, kind);
            // Reservation mode: the message is written at allocation, the entry masked.
            let info = w.vm(0).unwrap().guest().irq_info(irq).unwrap();
            let message = info.message.expect("reservation mode writes the message");
            assert_eq!(w.machine().stored_message(device, slot), Ok(message));
            assert_eq!(
                w.fire(device, slot).unwrap().outcome,
                FireOutcome::Masked,
                "{mode:?} {kind:?} before request_irq"
            );

            w.guest_mut(0).unwrap().request_irq(irq).unwrap();
            // The unmask released the interrupt held pending above into the vCPU; a fresh one
            // coalesces with it and the guest handles exactly one, on the right irq.
            assert_eq!(
                w.check(0, irq).unwrap(),
                Verdict::Correct,
                "{mode:?} {kind:?}"
            );

            let report = w.guest_mut(0).unwrap().free_irq(irq).unwrap();
            assert!(report.is_clean(), "{report:?}");
            // The allocation's message is still in the storage; fired, it is held at the
            // device and reaches no vCPU.
            assert_eq!(w.machine().stored_message(device, slot), Ok(message));
            let d = w.fire(device, slot).unwrap();
            assert_eq!(
                d.outcome,
                FireOutcome::Masked,
                "{mode:?} {kind:?} after free_irq"
            );
            assert_eq!(d.handled, []);

            let report = w
                .guest_mut(0)
                .unwrap()
                .free_irq_vectors(ACCEL, storage)
                .unwrap();
            assert!(report.is_clean(), "{report:?}");
            // Freed: still masked, nothing sent.
            let d = w.fire(device, slot).unwrap();
            assert_eq!(
                d.outcome,
                FireOutcome::Masked,
                "{mode:?} {kind:?} after free"
            );
            assert_eq!(d.handled, []);
        }
        let stats = w.vm(0).unwrap().guest().storage_stats();
        // Mask at allocation, unmask at request_irq, mask at free_irq, per entry.
        assert_eq!(
            (stats.ims_device_mask_writes, stats.ims_system_mask_writes),
            (3, 3)
        );
        assert_eq!(stats.msix_mask_writes, 0);
    }
}

// VIR-ALC-G-001: the simulated storage masks IMS entries at the device (one storage write,
// no unmask hidden in the message write) and refuses a per-slot mask of MSI.
#[test]
fn vir_alc_g_001_sim_storage_masks_ims_and_refuses_msi() {
    let mut m = Machine::new(&MachineConfig::new(2)).unwrap();
    let d = m
        .add_device(&DeviceConfig::new(RequesterId(0x10)).with_ims_device(4))
        .unwrap();
    let m: SharedMachine = Rc::new(RefCell::new(m));
    let mut s = SimStorage::new(Rc::clone(&m), BTreeMap::from([(ACCEL, d)]));
    let msg = MsiMessage::new(0xFEE0_0018, 0, 0);
    let slot = StorageSlot::ims_device(1);
    s.set_masked(ACCEL, GuestSlot::ImsDevice(1), true).unwrap();
    s.write_message(ACCEL, GuestSlot::ImsDevice(1), msg)
        .unwrap();
    assert_eq!(m.borrow().stored_message(d, slot), Ok(msg));
    assert_eq!(m.borrow_mut().fire(d, slot), Ok(FireOutcome::Masked));
    assert_eq!(
        m.borrow()
            .device(d)
            .unwrap()
            .storage_writes(StorageKind::ImsDevice),
        2
    );
    assert_eq!(
        s.set_masked(ACCEL, GuestSlot::Msi, true),
        Err(StorageError::NotMaskable {
            device: ACCEL,
            slot: GuestSlot::Msi
        })
    );
    assert_eq!(
        s.set_masked(ACCEL, GuestSlot::ImsDevice(4), true),
        Err(StorageError::IndexOutOfRange {
            device: ACCEL,
            slot: GuestSlot::ImsDevice(4),
            size: 4
        })
    );
}
