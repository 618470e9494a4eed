//! Snapshots of a VM's host state, to check that a failed call changed nothing (VIR-CALL-H-006).

use std::collections::BTreeMap;

use crate::backend::IrteTable;
use crate::config::Quotas;
use crate::handles::HandleSlot;
use crate::legacy::viommu::Viommu;
use crate::legacy::{EmulatedMsi, EmulatedMsix};
use crate::table::{TableAllocators, TableView};
use crate::vm::{Allocation, Vm, VmState};

/// Everything a call of one VM can change on the host, by value.
///
/// Two snapshots compare equal exactly when negotiation, session, legacy hook, every handle
/// slot (generation, allocation with per-vector states, targets, routes, host IRQs
/// and IRTEs), the storage-slot index, the quotas used, the host-wide table allocator, the
/// raw IRTEs read back from the table for this VM's entries, and the legacy scheme's emulated
/// MSI, MSI-X and remapping unit are equal. Counters and doorbell
/// latches are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSnapshot {
    /// Negotiation state.
    pub state: VmState,
    /// Session counter.
    pub session: u32,
    /// Legacy interrupts reported enabled.
    pub legacy_interrupts_enabled: u32,
    /// Every handle slot.
    pub handles: Vec<HandleSlot<Allocation>>,
    /// Live storage slots: (device id, kind, index) → handle.
    pub storage_slots: BTreeMap<(u32, u8, u32), u32>,
    /// IRTEs held.
    pub irtes_used: u32,
    /// Host vectors held.
    pub vectors_used: u32,
    /// The VM's quotas.
    pub quotas: Quotas,
    /// The host-wide table allocator.
    pub table: TableView,
    /// (index, raw entry) for every entry of this VM's allocations, read back from the table.
    pub irtes: Vec<(u32, Option<u128>)>,
    /// The emulated MSI capability of each device, in configuration order (legacy scheme).
    pub emulated_msi: Vec<EmulatedMsi>,
    /// The emulated MSI-X capability and table of each device, in configuration order.
    pub emulated_msix: Vec<EmulatedMsix>,
    /// The emulated remapping unit.
    pub viommu: Viommu,
}

impl VmSnapshot {
    pub(crate) fn capture<T: IrteTable>(vm: &Vm, alloc: &TableAllocators, table: &T) -> Self {
        let irtes = vm
            .allocations
            .iter()
            .flat_map(|(_, a)| (a.base..a.base + a.count()).map(|i| (a.table, i)))
            .map(|(t, i)| (i, table.read(t, i)))
            .collect();
        VmSnapshot {
            state: vm.state,
            session: vm.session,
            legacy_interrupts_enabled: vm.legacy_enabled,
            handles: vm.allocations.slots().to_vec(),
            storage_slots: vm.slots.clone(),
            irtes_used: vm.irtes_used,
            vectors_used: vm.vectors_used,
            quotas: vm.config.quotas,
            table: alloc.view(),
            irtes,
            emulated_msi: vm.legacy.devices.iter().map(|d| d.msi.clone()).collect(),
            emulated_msix: vm.legacy.devices.iter().map(|d| d.msix.clone()).collect(),
            viommu: vm.legacy.viommu.clone(),
        }
    }
}
