//! The host invariant checker, kept once in `vir_host::testing::invariants` (behind
//! `vir-host`'s `test-utils` feature) and re-exported here, where the fuzz bodies use it after
//! every step.

pub use vir_host::testing::invariants::{InvariantViolation, check_host};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{DEV_MAIN, World, WorldConfig};
    use vir_abi::feature::Features;
    use vir_abi::wire::StorageKind;
    use vir_host::VectorState;
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
