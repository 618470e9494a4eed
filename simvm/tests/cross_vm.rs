//! A VM's configuration can never let another VM's device deliver into it (VIR-SEC-H-006).
//!
//! VM A owns a device behind a PCIe-to-PCI bridge, so its IRTEs check a bus range (SVT = 2)
//! instead of one requester id. When that range covers the requester id of VM B's device, B's
//! device writing A's message passes A's IRTE source check and lands in A's vCPU, in posted
//! and in remapped mode alike. The host therefore refuses the second VM, whichever is created
//! first; VMs whose accepted requester ids are disjoint still run, and the bus range still
//! blocks every other requester.
use vir_guest::{AllocRequest, DeviceId as GuestDeviceId, Irq};
use vir_host::{ConfigError, IrMode, SourceValidation};
use vir_platform::{FireOutcome, RequesterId};
use vir_simvm::{DeviceSpec, Verdict, VmSpec, World, WorldBuilder, WorldError};

const DEV: GuestDeviceId = GuestDeviceId::new(0, 0x18);
const A_RID: u16 = 0x8100;
const B_RID: u16 = 0x9100;

fn vm_a(start_bus: u8, end_bus: u8) -> VmSpec {
    VmSpec::new(vec![0, 1]).with_device(
        DeviceSpec::new("bridged", DEV, A_RID)
            .with_msix(4)
            .with_source_validation(SourceValidation::BusRange { start_bus, end_bus }),
    )
}

fn vm_b() -> VmSpec {
    VmSpec::new(vec![0]).with_device(DeviceSpec::new("nic", DEV, B_RID).with_msix(4))
}

fn world(mode: IrMode, vms: [VmSpec; 2]) -> Result<World, WorldError> {
    let [first, second] = vms;
    WorldBuilder::new().mode(mode).vm(first).vm(second).build()
}

fn requested(w: &mut World, vm: usize) -> Irq {
    let g = w.guest_mut(vm).unwrap();
    let irq = g
        .alloc_irq_vectors(DEV, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap()[0];
    g.request_irq(irq).unwrap();
    irq
}

#[test]
fn vir_sec_h_006_bus_range_covering_another_vms_device_is_refused_in_either_order() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        // Every bus, and exactly B's bus.
        for (start, end) in [(0x00, 0xff), (0x91, 0x91), (0x80, 0x91)] {
            let expect = Err(WorldError::HostConfig(ConfigError::RequesterIdInUse(B_RID)));
            let a_first = world(mode, [vm_a(start, end), vm_b()]).map(|_| ());
            assert_eq!(
                a_first, expect,
                "{mode:?} A first, buses {start:#x}..={end:#x}"
            );
            let b_first = world(mode, [vm_b(), vm_a(start, end)]).map(|_| ());
            assert_eq!(
                b_first, expect,
                "{mode:?} B first, buses {start:#x}..={end:#x}"
            );
        }
    }
}

#[test]
fn vir_sec_h_003_disjoint_bus_range_delivers_its_own_and_blocks_the_other_vm() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut w = world(mode, [vm_a(0x80, 0x90), vm_b()]).unwrap();
        let a = requested(&mut w, 0);
        let b = requested(&mut w, 1);
        // Both VMs' own interrupts arrive where their guests expect them.
        assert_eq!(w.check(0, a).unwrap(), Verdict::Correct, "{mode:?}");
        assert_eq!(w.check(1, b).unwrap(), Verdict::Correct, "{mode:?}");
        // B's device writing A's message: outside A's bus range, blocked.
        let msg = w
            .vm(0)
            .unwrap()
            .guest()
            .irq_info(a)
            .unwrap()
            .message
            .unwrap();
        let d = w.inject_write(RequesterId(B_RID), msg);
        assert!(
            matches!(d.outcome, FireOutcome::Faulted(_)),
            "{mode:?}: {:?}",
            d.outcome
        );
        assert!(d.handled.is_empty(), "{mode:?}: {:?}", d.handled);
        // A requester on a bus inside the range (another function behind the bridge) passes.
        let d = w.inject_write(RequesterId(0x8a00), msg);
        assert!(
            d.handled.iter().all(|h| h.vm == Some(0)) && !d.handled.is_empty(),
            "{mode:?}: {d:?}"
        );
    }
}
