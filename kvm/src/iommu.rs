//! The "physical" interrupt-remapping unit of this VMM: the platform's VT-d model
//! ([`vir_platform::iommu::RemappingUnit`]) as the reference host's IRTE table. This machine
//! has no IOMMU the VMM could program, so the unit stays modelled: the host writes IRTEs into it
//! (each write followed by the invalidation of its index, as on hardware), and every interrupt
//! the test device raises is remapped by it, acting on the device's requester id, before it is
//! delivered through real KVM.

use vir_abi::hw::vtd::Irta;
use vir_host::backend::{IrteTable, IrteTableId};
use vir_platform::iommu::RemappingUnit;

/// log2 of the table size minus one (VT-d's S field): 4096 entries.
pub const TABLE_SIZE_S: u8 = 11;

/// The VT-d model as the host's [`IrteTable`].
#[derive(Debug)]
pub struct VtdTable {
    unit: RemappingUnit,
}

impl VtdTable {
    /// A unit with 4096 entries in x2APIC mode (EIME), remapping on, compatibility format
    /// blocked (CFI clear): what a host offering vIR runs with (VIR-DISC-H-001).
    pub fn new() -> Self {
        let mut unit = RemappingUnit::new(Irta {
            size_s: TABLE_SIZE_S,
            eime: true,
            base: 0,
        });
        unit.enable_remapping(true);
        unit.set_cfi(false);
        VtdTable { unit }
    }

    /// The unit (to remap the device's interrupt writes).
    pub fn unit_mut(&mut self) -> &mut RemappingUnit {
        &mut self.unit
    }
}

impl Default for VtdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl IrteTable for VtdTable {
    fn size(&self) -> u32 {
        1 << (TABLE_SIZE_S + 1)
    }

    fn write(&mut self, table: IrteTableId, index: u32, entry: u128) {
        // The host passes indices below `size()` only, and only the unit's table (it runs with
        // VT-d); anything else is a host bug that leaves the entry unwritten, which the device's
        // next interrupt shows as a fault.
        if table == IrteTableId::Unit
            && let Ok(i) = u16::try_from(index)
            && self.unit.write_irte(i, entry).is_ok()
        {
            let _ = self.unit.invalidate_entries(i, 0);
        }
    }

    fn read(&self, table: IrteTableId, index: u32) -> Option<u128> {
        if table != IrteTableId::Unit {
            return None;
        }
        u16::try_from(index)
            .ok()
            .and_then(|i| self.unit.irte(i).ok())
    }
}
