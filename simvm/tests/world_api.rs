//! What a VMM team driving [`World`] needs: interrupts an unmask releases are serviced, and
//! outcomes obtained from the machine directly can be handed back to the world.
use vir_guest::{AllocRequest, DeviceId as GuestDeviceId};
use vir_host::IrMode;
use vir_platform::FireOutcome;
use vir_simvm::{DeviceSpec, Verdict, VmSpec, WorldBuilder};

const NIC: GuestDeviceId = GuestDeviceId::new(0, 0x18);

#[test]
fn interrupt_released_by_unmask_reaches_the_guest() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut w = WorldBuilder::new()
            .mode(mode)
            .vm(VmSpec::new(vec![0, 7])
                .with_device(DeviceSpec::new("nic", NIC, 0x8100).with_msix(4)))
            .build()
            .unwrap();
        let g = w.guest_mut(0).unwrap();
        let irq = g
            .alloc_irq_vectors(NIC, AllocRequest::MsiX { indices: &[2] }, None)
            .unwrap()[0];
        g.request_irq(irq).unwrap();
        assert_eq!(w.check(0, irq).unwrap(), Verdict::Correct, "{mode:?}");
        let expected = w.expected(0, irq).unwrap();
        let (dev, slot) = w.source_of(0, irq).unwrap();
        // Masked at the device: the interrupt stays pending there.
        assert!(w.set_masked(dev, slot, true).unwrap().is_empty());
        let d = w.fire(dev, slot).unwrap();
        assert_eq!(d.outcome, FireOutcome::Masked, "{mode:?}");
        assert!(d.handled.is_empty());
        // The unmask releases it, and the world services it: the guest handles `irq`.
        let released = w.set_masked(dev, slot, false).unwrap();
        assert_eq!(released.len(), 1, "{mode:?}: {released:?}");
        let h = &released[0].handled;
        assert_eq!(h.len(), 1, "{mode:?}: {h:?}");
        assert_eq!(h[0].irq, Some(irq));
        assert_eq!(h[0].apic_id, expected.apic_id);
        assert_eq!(h[0].vector, expected.vector);
        // An outcome taken from the machine directly is serviced the same way.
        let outcome = w.machine_mut().fire(dev, slot).unwrap();
        let d = w.service(outcome);
        assert_eq!(d.handled.len(), 1, "{mode:?}: {d:?}");
        assert_eq!(d.handled[0].irq, Some(irq));
        // Nothing is left pending afterwards.
        let vcpu = match d.outcome {
            FireOutcome::Delivered { vcpu, .. } => vcpu,
            FireOutcome::Posted(p) => p.owner.unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(w.drain(vcpu).is_empty());
    }
}

#[test]
fn world_shares_its_machine_and_host() {
    let w = WorldBuilder::new()
        .vm(VmSpec::new(vec![0]).with_device(DeviceSpec::new("nic", NIC, 0x8100).with_msix(1)))
        .build()
        .unwrap();
    let m = w.shared_machine();
    let h = w.shared_host();
    assert!(std::rc::Rc::ptr_eq(&m, &w.shared_machine()));
    assert_eq!(
        m.borrow().iommu().remapping_enabled(),
        w.machine().iommu().remapping_enabled()
    );
    let id = w.vm(0).unwrap().id();
    assert_eq!(h.borrow().vm_ids().collect::<Vec<_>>(), [id]);
}
