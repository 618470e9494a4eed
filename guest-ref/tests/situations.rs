//! The three situations of `spec/vir-v1.md` §2.2 behind the same driver-facing API: a boot path picks
//! the domain from discovery alone, and the same driver code runs on each; only IMS differs
//! (`VIR-LEG-G-001`, `VIR-LEG-G-002`).

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{APIC_IDS, DEV_A, FakeHv, FakeStorage, Fire, HostModel, StorageModel};
use vir_abi::discovery::{CPUID1_ECX_HYPERVISOR, InfoLeaf, binding, signature_regs};
use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{Irta, RemappableMsi, RemappedIrte, Svt};
use vir_abi::status::errno;
use vir_guest::{
    AllocRequest, BareMetalVtdDomain, CpuId, CpuMask, Cpuid, CpuidResult, DomainError,
    EmulatedVtdDomain, HardwareError, IrDomain, IrSituation, IrSlot, Irq, IrqConfig, IrqError,
    IrqSubsystem, IrteMemory, NoVirReason, RemapDomain, RemappingHardware, StorageSlot,
    StorageType, VirDomain, VtdRegisters, select_ir_domain,
};

// ---- a VT-d unit model: table memory, entry cache, registers ----

#[derive(Debug, Default)]
struct Unit {
    irta_reg: u64,
    irta: Option<Irta>,
    enabled: bool,
    cfi: bool,
    memory: Vec<u128>,
    cache: Vec<u128>,
    /// Trapped register accesses (situation 2) or register writes (situation 1).
    register_writes: u64,
    invalidations: u64,
    irte_writes: u64,
}

impl Unit {
    fn latch(&mut self, irta: Irta) {
        self.irta = Some(irta);
        self.memory = vec![0; irta.entries() as usize];
        self.cache = self.memory.clone();
    }

    fn invalidate(&mut self, index: u16, mask: u8) {
        let n = 1usize << mask.min(16);
        let start = usize::from(index) & !(n - 1);
        let end = (start + n).min(self.memory.len());
        self.cache[start..end].copy_from_slice(&self.memory[start..end]);
        self.invalidations += 1;
    }

    /// What the unit does with a message from requester `rid`: the (APIC id, vector) of a
    /// present entry whose source check passes.
    fn remap(&self, rid: u16, msg: MsiMessage) -> Option<(u32, u8)> {
        let irta = self.irta?;
        if !self.enabled {
            return None;
        }
        let r = RemappableMsi::decode(msg).ok()?;
        let raw = *self.cache.get(usize::from(r.irte_index()))?;
        let e = RemappedIrte::decode(raw, irta.apic_mode()).ok()?;
        (e.present && e.sid_matches(rid)).then_some((e.dest, e.vector))
    }
}

#[derive(Clone, Default)]
struct SharedUnit(Rc<RefCell<Unit>>);

impl RemappingHardware for SharedUnit {
    fn enable(&mut self, irta: Irta) -> Result<(), HardwareError> {
        let mut u = self.0.borrow_mut();
        u.latch(irta);
        u.enabled = true;
        u.register_writes += 2;
        Ok(())
    }
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        let mut u = self.0.borrow_mut();
        let e = u
            .memory
            .get_mut(usize::from(index))
            .ok_or(HardwareError::IrteWrite(index))?;
        *e = irte;
        u.irte_writes += 1;
        Ok(())
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.0.borrow_mut().invalidate(index, index_mask);
        Ok(())
    }
}

impl IrteMemory for SharedUnit {
    fn write_irte(&mut self, index: u16, irte: u128) -> Result<(), HardwareError> {
        RemappingHardware::write_irte(self, index, irte)
    }
}

impl VtdRegisters for SharedUnit {
    fn write_irta(&mut self, irta: u64) -> Result<(), HardwareError> {
        let mut u = self.0.borrow_mut();
        u.irta_reg = irta;
        u.register_writes += 1;
        Ok(())
    }
    fn write_global_command(&mut self, command: u32) -> Result<(), HardwareError> {
        let mut u = self.0.borrow_mut();
        u.register_writes += 1;
        if command & vir_guest::vtd_domain::GCMD_SIRTP != 0 {
            let irta = Irta::decode(u.irta_reg).map_err(|_| HardwareError::Register)?;
            u.latch(irta);
        }
        u.enabled = command & vir_guest::vtd_domain::GCMD_IRE != 0;
        u.cfi = command & vir_guest::vtd_domain::GCMD_CFI != 0;
        Ok(())
    }
    fn invalidate(&mut self, index: u16, index_mask: u8) -> Result<(), HardwareError> {
        self.0.borrow_mut().invalidate(index, index_mask);
        Ok(())
    }
    fn invalidate_all(&mut self) -> Result<(), HardwareError> {
        self.0.borrow_mut().invalidate(0, 16);
        Ok(())
    }
}

// ---- booting a guest in each situation ----

struct Cpu {
    hypervisor: bool,
    vir: bool,
}

impl Cpuid for Cpu {
    fn cpuid(&mut self, leaf: u32, _: u32) -> CpuidResult {
        match leaf {
            1 => CpuidResult {
                ecx: if self.hypervisor {
                    CPUID1_ECX_HYPERVISOR
                } else {
                    0
                },
                ..Default::default()
            },
            0x4000_0100 if self.vir => {
                let [ebx, ecx, edx] = signature_regs();
                CpuidResult {
                    eax: 0x4000_0101,
                    ebx,
                    ecx,
                    edx,
                }
            }
            0x4000_0101 if self.vir => {
                let [eax, ebx, ecx, edx] = InfoLeaf {
                    min_version: 1,
                    max_version: 1,
                    bindings: binding::VMCALL,
                    doorbell_port: 0,
                }
                .encode();
                CpuidResult { eax, ebx, ecx, edx }
            }
            _ => CpuidResult::default(),
        }
    }
}

type Domain = IrDomain<
    BareMetalVtdDomain<SharedUnit>,
    EmulatedVtdDomain<SharedUnit, SharedUnit>,
    VirDomain<FakeHv>,
>;
type Guest = IrqSubsystem<Domain, FakeStorage>;

struct Booted {
    situation: IrSituation,
    guest: Guest,
    unit: SharedUnit,
    host: Rc<RefCell<HostModel>>,
    storage: Rc<RefCell<StorageModel>>,
}

const IRTA: Irta = Irta {
    size_s: 7,
    eime: true,
    base: 0x8_0000,
};

/// The boot path of a guest kernel: select the domain from discovery and negotiation, build it,
/// and put the interrupt subsystem over it.
fn boot(cpu: Cpu, host: HostModel) -> Booted {
    let host = Rc::new(RefCell::new(host));
    let storage = Rc::new(RefCell::new(StorageModel::new()));
    let unit = SharedUnit::default();
    let mut vir = VirDomain::new(FakeHv(host.clone()));
    let mut cpu = cpu;
    let situation = select_ir_domain(&mut cpu, true, |_| vir.negotiate(Features::V1_DEFINED));
    let domain = match situation {
        IrSituation::BareMetal => {
            IrDomain::BareMetal(BareMetalVtdDomain::new(unit.clone(), IRTA).unwrap())
        }
        IrSituation::Emulated(_) => {
            IrDomain::Emulated(EmulatedVtdDomain::new(unit.clone(), unit.clone(), IRTA).unwrap())
        }
        IrSituation::Vir(_) => IrDomain::Vir(vir),
        IrSituation::NoRemapping(_) => unreachable!("a remapping unit is described"),
    };
    let guest = IrqSubsystem::new(
        domain,
        FakeStorage(storage.clone()),
        IrqConfig::new(APIC_IDS.to_vec()),
    )
    .unwrap();
    Booted {
        situation,
        guest,
        unit,
        host,
        storage,
    }
}

impl Booted {
    /// Device `DEV_A` raises vector `sub` of `slot`: through the situation's remapping (the
    /// unit's cached entries, or the vIR host's table) to a CPU and vector, then the guest's
    /// vector→irq table.
    fn fire(&mut self, slot: StorageSlot, sub: u16) -> Fire {
        let msg = {
            let s = self.storage.borrow();
            let Some(&m) = s.messages.get(&(DEV_A, slot)) else {
                return Fire::NoMessage;
            };
            if slot != StorageSlot::Msi && s.masked.get(&(DEV_A, slot)).copied().unwrap_or(true) {
                return Fire::Masked;
            }
            let data = if slot == StorageSlot::Msi {
                m.data | u32::from(sub)
            } else {
                m.data
            };
            MsiMessage { data, ..m }
        };
        let dest = match self.situation {
            IrSituation::Vir(_) => {
                let index = RemappableMsi::decode(msg).unwrap().irte_index();
                match self.host.borrow().irte(u32::from(index)) {
                    Some(common::HostVec::Active { apic_id, vector }) => Some((apic_id, vector)),
                    _ => None,
                }
            }
            _ => self.unit.0.borrow().remap(DEV_A.requester_id(), msg),
        };
        let Some((apic, vector)) = dest else {
            return Fire::Blocked;
        };
        let cpu = self.guest.cpu_of_apic(apic).unwrap();
        match self.guest.handle_interrupt(cpu, vector) {
            Some(irq) => Fire::Irq(irq),
            None => Fire::Spurious(cpu, vector),
        }
    }

    fn writes(&self) -> usize {
        self.storage.borrow().writes.len()
    }
}

fn bare_metal() -> Booted {
    boot(
        Cpu {
            hypervisor: false,
            vir: true,
        },
        HostModel::new(),
    )
}

fn emulated() -> Booted {
    boot(
        Cpu {
            hypervisor: true,
            vir: false,
        },
        HostModel::new(),
    )
}

fn vir() -> Booted {
    boot(
        Cpu {
            hypervisor: true,
            vir: true,
        },
        HostModel::new(),
    )
}

/// The same driver code on every situation: MSI-X entries and an MSI block allocated,
/// requested, delivered; every interrupt moved, delivered at its new target with no storage
/// write; a CPU unplugged; everything freed and blocked.
fn driver_workload(b: &mut Booted) {
    let msix = b
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX {
                indices: &[0, 1, 2, 3],
            },
            None,
        )
        .unwrap();
    for &irq in &msix {
        b.guest.request_irq(irq).unwrap();
    }
    for (i, &irq) in msix.iter().enumerate() {
        assert_eq!(b.fire(StorageSlot::MsiX(i as u32), 0), Fire::Irq(irq));
    }
    let writes = b.writes();
    for (i, &irq) in msix.iter().enumerate() {
        b.guest
            .set_affinity(irq, &CpuMask::single(CpuId((i as u32 + 1) % 4)))
            .unwrap();
        assert_eq!(b.fire(StorageSlot::MsiX(i as u32), 0), Fire::Irq(irq));
        let info = b.guest.irq_info(irq).unwrap();
        assert!(
            matches!(info.state, vir_guest::IrqState::Active { cpu, .. } if cpu == CpuId((i as u32 + 1) % 4))
        );
    }
    assert_eq!(b.writes(), writes, "affinity never rewrites storage (B12)");
    let report = b.guest.cpu_offline(CpuId(1)).unwrap();
    assert_eq!(report.migrated.len(), 1);
    assert!(report.failed.is_empty());
    for (i, &irq) in msix.iter().enumerate() {
        assert_eq!(b.fire(StorageSlot::MsiX(i as u32), 0), Fire::Irq(irq));
    }
    for &irq in &msix {
        assert!(b.guest.free_irq(irq).unwrap().is_clean());
    }
    assert!(
        b.guest
            .free_irq_vectors(DEV_A, StorageType::MsiX)
            .unwrap()
            .is_clean()
    );
}

#[test]
fn vir_leg_g_001_each_situation_runs_the_same_driver_code() {
    for (mut b, expect) in [
        (bare_metal(), "bare"),
        (emulated(), "emulated"),
        (vir(), "vir"),
    ] {
        let got = match b.situation {
            IrSituation::BareMetal => "bare",
            IrSituation::Emulated(NoVirReason::NotOffered) => "emulated",
            IrSituation::Vir(_) => "vir",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got, expect);
        driver_workload(&mut b);
    }
}

#[test]
fn vir_leg_g_001_ims_allowed_on_bare_metal_and_with_vir_refused_when_emulated() {
    for mut b in [bare_metal(), vir()] {
        assert!(b.guest.ims_available());
        let irqs = b
            .guest
            .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[5] }, None)
            .unwrap();
        b.guest.request_irq(irqs[0]).unwrap();
        assert_eq!(b.fire(StorageSlot::ImsDevice(5), 0), Fire::Irq(irqs[0]));
    }
    let mut b = emulated();
    assert!(!b.guest.ims_available());
    let e = b
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[5] }, None)
        .unwrap_err();
    assert_eq!(
        e,
        IrqError::ImsUnavailable {
            device: DEV_A,
            storage: StorageType::ImsDevice
        }
    );
    assert_eq!(e.errno(), errno::EOPNOTSUPP);
    let e = b
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[9] }, None)
        .unwrap_err();
    assert_eq!(e.errno(), errno::EOPNOTSUPP);
    // The domain itself refuses an IMS slot too.
    let mut d = EmulatedVtdDomain::new(b.unit.clone(), b.unit.clone(), IRTA).unwrap();
    let slot = IrSlot {
        device: DEV_A,
        storage: StorageType::ImsSystem,
        index: 0,
        log2_count: 0,
    };
    assert_eq!(
        d.alloc(slot),
        Err(DomainError::Unsupported(StorageType::ImsSystem))
    );
    assert_eq!(b.writes(), 0, "nothing was written for a refused request");
}

#[test]
fn vir_neg_g_002_failed_negotiation_falls_back_to_the_emulated_unit() {
    let mut host = HostModel::new();
    host.fail_next(
        vir_abi::call::CallCode::NEGOTIATE,
        vir_abi::status::Status::INVALID_STATE,
    );
    let mut b = boot(
        Cpu {
            hypervisor: true,
            vir: true,
        },
        host,
    );
    assert!(matches!(
        b.situation,
        IrSituation::Emulated(NoVirReason::Negotiation(_))
    ));
    assert!(!b.guest.ims_available());
    driver_workload(&mut b);
}

#[test]
fn situation_2_programs_the_table_in_memory_and_invalidates_through_registers() {
    let mut b = emulated();
    {
        // Linux's order: IRTA, SIRTP, IRE (CFI clear), global invalidation.
        let u = b.unit.0.borrow();
        assert_eq!(u.register_writes, 3);
        assert_eq!(u.invalidations, 1);
        assert_eq!(u.irta, Some(IRTA));
        assert!(u.enabled && !u.cfi);
    }
    let irqs = b
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 4 }, None)
        .unwrap();
    let before = b.unit.0.borrow().invalidations;
    for &irq in &irqs {
        b.guest.request_irq(irq).unwrap();
    }
    // Reservation mode: 4 reservations at allocation, then 4 activations, each invalidated.
    assert_eq!(b.unit.0.borrow().invalidations, before + 4);
    for (i, &irq) in irqs.iter().enumerate() {
        assert_eq!(b.fire(StorageSlot::Msi, i as u16), Fire::Irq(irq));
    }
    // The message written once: the block's handle, SHV, the device adds the vector index.
    let s = b.storage.borrow();
    assert_eq!(s.writes.len(), 1);
    let m = RemappableMsi::decode(s.writes[0].2).unwrap();
    assert!(m.shv && m.subhandle == 0);
    assert_eq!(m.handle % 4, 0);
    drop(s);
    // The entries name the device as source (SVT = 1, SID = requester id).
    let u = b.unit.0.borrow();
    let e = RemappedIrte::decode(u.cache[usize::from(m.handle)], ApicMode::X2Apic).unwrap();
    assert_eq!(
        (e.svt, e.sid, e.sq),
        (Svt::VerifySid, DEV_A.requester_id(), 0)
    );
    assert_eq!(
        b.guest.irqs().collect::<Vec<Irq>>(),
        irqs,
        "irq numbers unchanged"
    );
}
