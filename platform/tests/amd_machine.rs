//! The machine with its AMD-Vi IOMMU: guest-mode posting (doorbell or GA log), remapped
//! delivery, target aborts and writes outside the interrupt window, end to end.

use vir_abi::hw::amd::{AmdGuestIrte, AmdIrte128, AmdRemapIrte, INT_TYPE_FIXED};
use vir_abi::hw::msi::MsiMessage;
use vir_platform::amd_iommu::{AmdAbort, DteInterrupt, EVENT_IO_PAGE_FAULT, IrteWidth};
use vir_platform::device::DeviceConfig;
use vir_platform::kvm::VmConfig;
use vir_platform::machine::{POSTED_INTR_VECTOR, VAPIC_PAGE_BASE};
use vir_platform::{
    DropReason, FireOutcome, GuestApicId, HostApicId, Machine, MachineConfig, MachineError,
    Notification, RequesterId, StorageSlot, VcpuRef, VmId,
};

const RID: RequesterId = RequesterId(0x0310);
const VM: VmId = VmId(0);

fn vcpu() -> VcpuRef {
    VcpuRef::new(VM, GuestApicId(7))
}

fn machine() -> Machine {
    let mut m = Machine::new(&MachineConfig::new(2)).unwrap();
    m.create_vm(
        VM,
        &VmConfig {
            memory: vec![(0, 0x10000)],
            vcpus: vec![(GuestApicId(7), HostApicId(1))],
        },
    )
    .unwrap();
    m
}

fn guest_entry(vector: u8, page: u64, is_run: bool) -> u128 {
    AmdIrte128::Guest(AmdGuestIrte {
        remap_en: true,
        sup_iopf: false,
        ga_log_intr: true,
        is_run,
        destination: 1,
        ga_tag: 0x42,
        vector,
        backing_page: page,
    })
    .encode()
    .unwrap()
}

#[test]
fn vapic_pages_need_the_amd_iommu() {
    let mut m = machine();
    assert_eq!(m.setup_vapic_page(vcpu()), Err(MachineError::NoAmdIommu));
    m.enable_amd_iommu(IrteWidth::Bits128);
    assert_eq!(m.setup_vapic_page(vcpu()), Ok(VAPIC_PAGE_BASE));
    assert_eq!(
        m.setup_vapic_page(vcpu()),
        Ok(VAPIC_PAGE_BASE),
        "one page per vCPU"
    );
}

#[test]
fn guest_mode_posts_into_the_vcpus_page_with_ga_log_or_doorbell() {
    let mut m = machine();
    m.enable_amd_iommu(IrteWidth::Bits128);
    let page = m.setup_vapic_page(vcpu()).unwrap();
    let amd = m.amd_iommu_mut().unwrap();
    amd.set_dte(RID, DteInterrupt::remapped(4)).unwrap();
    amd.write_irte(RID, 3, guest_entry(0x51, page, false))
        .unwrap();
    amd.write_irte(RID, 4, guest_entry(0x52, page, true))
        .unwrap();
    amd.invalidate_interrupt_table(RID);

    let FireOutcome::Posted(p) = m.inject_write(RID, MsiMessage::new(0xFEE0_0000, 0, 3)) else {
        panic!("not posted");
    };
    assert_eq!((p.pda, p.vector, p.owner), (page, 0x51, Some(vcpu())));
    assert_eq!(
        p.notification,
        Notification::GaLog {
            tag: 0x42,
            logged: true
        }
    );
    assert_eq!(m.amd_iommu_mut().unwrap().take_ga_log(), vec![0x42]);

    let FireOutcome::Posted(p) = m.inject_write(RID, MsiMessage::new(0xFEE0_0000, 0, 4)) else {
        panic!("not posted");
    };
    assert_eq!(
        p.notification,
        Notification::Doorbell {
            pcpu: HostApicId(1)
        }
    );
    assert!(
        m.pcpus()
            .iter()
            .any(|c| c.apic_id() == HostApicId(1) && c.received(POSTED_INTR_VECTOR) > 0)
    );
    // The vCPU takes its IRR: both vectors reach its LAPIC.
    assert_eq!(m.sync_posted(vcpu()), Ok(vec![0x51, 0x52]));
    assert_eq!(m.sync_posted(vcpu()), Ok(vec![]));
}

#[test]
fn aborts_and_writes_outside_the_window() {
    let mut m = machine();
    m.enable_amd_iommu(IrteWidth::Bits128);
    let amd = m.amd_iommu_mut().unwrap();
    amd.set_dte(RID, DteInterrupt::remapped(2)).unwrap();
    // A remapped entry to a CPU without a host IRQ there: reaches the CPU, goes nowhere.
    let remapped = AmdIrte128::Remapped(AmdRemapIrte {
        remap_en: true,
        sup_iopf: false,
        int_type: INT_TYPE_FIXED,
        rq_eoi: false,
        dest_mode_logical: false,
        destination: 1,
        vector: 0x33,
    })
    .encode()
    .unwrap();
    amd.write_irte(RID, 0, remapped).unwrap();
    amd.invalidate_interrupt_table(RID);
    assert_eq!(
        m.inject_write(RID, MsiMessage::new(0xFEE0_0000, 0, 0)),
        FireOutcome::Dropped(DropReason::NoHostIrq {
            pcpu: HostApicId(1),
            vector: 0x33
        })
    );
    assert_eq!(
        m.inject_write(RID, MsiMessage::new(0xFEE0_0000, 0, 1)),
        FireOutcome::Aborted(AmdAbort {
            code: Some(EVENT_IO_PAGE_FAULT),
            index: Some(1),
            logged: true
        })
    );
    assert_eq!(
        m.inject_write(RID, MsiMessage::new(0xFED0_0000, 0, 0)),
        FireOutcome::Dropped(DropReason::NotInterrupt)
    );
    // A device fires through its storage the same way.
    let d = m.add_device(&DeviceConfig::new(RID).with_msix(2)).unwrap();
    m.set_msix_control(d, true, false).unwrap();
    m.set_masked(d, StorageSlot::msix(0), false).unwrap();
    m.write_message(d, StorageSlot::msix(0), MsiMessage::new(0xFEE0_0000, 0, 1))
        .unwrap();
    assert!(matches!(
        m.fire(d, StorageSlot::msix(0)),
        Ok(FireOutcome::Aborted(_))
    ));
}
