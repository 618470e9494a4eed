use super::*;
use crate::device::DeviceId;
use alloc::vec::Vec;
use vir_abi::hw::vtd::Irte;
use vir_abi::status::errno;

/// A table with an entry cache: writes land in `memory`, invalidations copy into `cache`.
#[derive(Default)]
struct Model {
    enabled: Option<Irta>,
    memory: Vec<u128>,
    cache: Vec<u128>,
    ops: Vec<(char, u16, u8)>,
    fail_write: bool,
}

impl RemappingHardware for Model {
    fn enable(&mut self, irta: Irta) -> Result<(), HardwareError> {
        self.enabled = Some(irta);
        self.memory = vec![0; irta.entries() as usize];
        self.cache = self.memory.clone();
        Ok(())
    }
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        if core::mem::take(&mut self.fail_write) {
            return Err(HardwareError::IrteWrite(index));
        }
        self.memory[usize::from(index)] = irte;
        self.ops.push(('w', index, 0));
        Ok(())
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        let n = 1usize << index_mask;
        let start = usize::from(index) & !(n - 1);
        for i in start..(start + n).min(self.memory.len()) {
            self.cache[i] = self.memory[i];
        }
        self.ops.push(('i', index, index_mask));
        Ok(())
    }
}

fn irta(size_s: u8, eime: bool) -> Irta {
    Irta {
        size_s,
        eime,
        base: 0x1000,
    }
}

const DEV: DeviceId = DeviceId(0x0001_3a08);

fn slot(storage: StorageType, index: u32, log2_count: u8) -> IrSlot {
    IrSlot {
        device: DEV,
        storage,
        index,
        log2_count,
    }
}

#[test]
fn allocations_are_naturally_aligned_and_ids_fresh() {
    let mut d = BareMetalVtdDomain::new(Model::default(), irta(5, true)).unwrap();
    let a = d.alloc(slot(StorageType::MsiX, 0, 0)).unwrap();
    let b = d.alloc(slot(StorageType::Msi, 0, 3)).unwrap();
    let c = d.alloc(slot(StorageType::ImsDevice, 9, 0)).unwrap();
    assert_eq!(d.allocation_base(a), Some(0));
    assert_eq!(d.allocation_base(b), Some(8));
    assert_eq!(d.allocation_base(c), Some(1));
    assert_eq!(
        (a, b, c),
        (AllocationId(1), AllocationId(2), AllocationId(3))
    );
    d.free(a).unwrap();
    let e = d.alloc(slot(StorageType::MsiX, 1, 0)).unwrap();
    assert_eq!((e, d.allocation_base(e)), (AllocationId(4), Some(0)));
    assert_eq!(
        d.alloc(slot(StorageType::MsiX, 2, 1)),
        Err(DomainError::InvalidSlot(slot(StorageType::MsiX, 2, 1)))
    );
    assert_eq!(
        d.alloc(slot(StorageType::Msi, 0, 6)),
        Err(DomainError::InvalidSlot(slot(StorageType::Msi, 0, 6)))
    );
    assert_eq!(d.live_allocations(), 3);
}

#[test]
fn table_full_in_a_small_table() {
    // S = 0: two entries.
    let mut d = BareMetalVtdDomain::new(Model::default(), irta(0, true)).unwrap();
    assert_eq!(
        d.alloc(slot(StorageType::Msi, 0, 2)),
        Err(DomainError::TableFull { log2_count: 2 })
    );
    d.alloc(slot(StorageType::MsiX, 0, 0)).unwrap();
    d.alloc(slot(StorageType::MsiX, 1, 0)).unwrap();
    let e = d.alloc(slot(StorageType::MsiX, 2, 0)).unwrap_err();
    assert_eq!(e, DomainError::TableFull { log2_count: 0 });
    assert_eq!(e.errno(), errno::ENOSPC);
}

#[test]
fn entries_follow_linux_and_every_change_is_invalidated() {
    let mut d = BareMetalVtdDomain::new(Model::default(), irta(5, true)).unwrap();
    let id = d.alloc(slot(StorageType::Msi, 0, 2)).unwrap();
    let m = d.activate(id, 0, Activation::Reserve).unwrap();
    assert_eq!(
        m,
        RemappableMsi {
            handle: 0,
            shv: true,
            subhandle: 0
        }
        .encode()
    );
    let hw = d.hardware();
    let r = RemappedIrte::decode(hw.cache[0], ApicMode::X2Apic).unwrap();
    assert!(!r.present && r.fpd, "a reservation blocks silently (B11)");
    let t = IrqTarget {
        apic_id: 0x1234,
        vector: 0x41,
    };
    assert_eq!(d.activate(id, 2, Activation::Target(t)), Ok(m));
    let e = Irte::decode(d.hardware().cache[2], ApicMode::X2Apic).unwrap();
    assert_eq!(
        e,
        Irte::Remapped(RemappedIrte {
            present: true,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0x41,
            dest: 0x1234,
            sid: 0x3a08,
            sq: 0,
            svt: Svt::VerifySid,
        })
    );
    let t2 = IrqTarget {
        apic_id: 3,
        vector: 0x50,
    };
    d.set_affinity(id, 2, t2).unwrap();
    assert_eq!(
        RemappedIrte::decode(d.hardware().cache[2], ApicMode::X2Apic).map(|r| (r.dest, r.vector)),
        Ok((3, 0x50))
    );
    d.deactivate(id, 2).unwrap();
    assert_eq!(d.hardware().cache[2], 0);
    assert_eq!(
        d.set_affinity(id, 2, t2),
        Err(DomainError::InvalidState {
            id,
            sub: 2,
            state: VectorState::Allocated
        })
    );
    d.activate(id, 3, Activation::Target(t)).unwrap();
    d.free(id).unwrap();
    assert!(d.hardware().cache.iter().all(|&e| e == 0));
    // Every write was followed by an invalidation covering it.
    let ops = &d.hardware().ops;
    assert_eq!(
        ops.as_slice(),
        &[
            ('w', 0, 0),
            ('i', 0, 0),
            ('w', 2, 0),
            ('i', 2, 0),
            ('w', 2, 0),
            ('i', 2, 0),
            ('w', 2, 0),
            ('i', 2, 0),
            ('w', 3, 0),
            ('i', 3, 0),
            ('w', 0, 0),
            ('w', 3, 0),
            ('i', 0, 2),
        ]
    );
    assert_eq!(
        d.stats(),
        VtdStats {
            irte_writes: 7,
            invalidations: 6
        }
    );
}

#[test]
fn xapic_table_cannot_reach_apic_ids_above_255() {
    let mut d = BareMetalVtdDomain::new(Model::default(), irta(5, false)).unwrap();
    let id = d.alloc(slot(StorageType::MsiX, 0, 0)).unwrap();
    let far = IrqTarget {
        apic_id: 0x100,
        vector: 0x41,
    };
    assert_eq!(
        d.activate(id, 0, Activation::Target(far)),
        Err(DomainError::UnreachableDestination { apic_id: 0x100 })
    );
    let near = IrqTarget {
        apic_id: 0xFF,
        vector: 0x41,
    };
    d.activate(id, 0, Activation::Target(near)).unwrap();
    let r = RemappedIrte::decode(d.hardware().cache[0], ApicMode::XApic).unwrap();
    assert_eq!(r.dest, 0xFF);
}

#[test]
fn hardware_errors_leave_the_vector_state_unchanged() {
    let mut d = BareMetalVtdDomain::new(Model::default(), irta(5, true)).unwrap();
    let id = d.alloc(slot(StorageType::MsiX, 0, 0)).unwrap();
    d.hardware_mut().fail_write = true;
    let t = IrqTarget {
        apic_id: 1,
        vector: 0x41,
    };
    let e = d.activate(id, 0, Activation::Target(t)).unwrap_err();
    assert_eq!(e, DomainError::Hardware(HardwareError::IrteWrite(0)));
    assert_eq!(e.errno(), errno::EIO);
    assert_eq!(
        d.deactivate(id, 0),
        Err(DomainError::InvalidState {
            id,
            sub: 0,
            state: VectorState::Allocated
        })
    );
    assert_eq!(
        d.activate(AllocationId(77), 0, Activation::Reserve),
        Err(DomainError::UnknownAllocation(AllocationId(77)))
    );
    assert_eq!(
        d.activate(id, 1, Activation::Reserve),
        Err(DomainError::InvalidSubhandle {
            id,
            sub: 1,
            count: 1
        })
    );
}
