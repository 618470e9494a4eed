//! Which interrupt-remapping domain a guest kernel uses: the three situations of
//! `spec/vir-v1.md` §2.2,
//! told apart without heuristics.
//!
//! | CPUID.1:ECX\[31\] | vIR leaves | NEGOTIATE | remapping unit (DMAR) | domain | IMS |
//! |---|---|---|---|---|---|
//! | 0 | not read | — | present | bare-metal VT-d (situation 1) | yes |
//! | 1 | absent (or unusable) | — | present | emulated vIOMMU (situation 2) | no |
//! | 1 | present | confirmed | any | vIR (situation 3) | with an IMS feature |
//! | 1 | present | failed | present | emulated vIOMMU (situation 2) | no |
//! | any | — | — | absent | none: compatibility-format MSI/MSI-X | no |
//!
//! The only inputs are architectural facts: the hypervisor bit (`VIR-DISC-G-001`), the vIR
//! signature and the outcome of the negotiation (`VIR-NEG-G-002`), and whether the firmware
//! describes a remapping unit with interrupt remapping. Under a hypervisor an emulated unit never
//! gets the remapping capability without vIR (`VIR-LEG-G-002`), so IMS is offered only on bare
//! metal or after a confirmed negotiation (`VIR-LEG-G-001`).
//!
//! [`IrDomain`] puts the three domains behind one type, so one
//! [`IrqSubsystem`](crate::IrqSubsystem) serves every situation with the same driver-facing API.

use vir_abi::hw::msi::MsiMessage;

use crate::device::StorageType;
use crate::discovery::{Cpuid, DiscoveryError, Platform, VirInterface, discover};
use crate::domain::{Activation, AllocationId, DomainError, IrSlot, IrqTarget, RemapDomain};
use crate::negotiation::{NegotiationError, Session};

/// Why a guest under a hypervisor falls back to its emulated remapping unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoVirReason {
    /// The hypervisor shows no vIR signature.
    NotOffered,
    /// The vIR leaves are there but unusable.
    Discovery(DiscoveryError),
    /// Negotiation failed (the host did not switch, or the guest reset it).
    Negotiation(NegotiationError),
}

/// The remapping situation of a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrSituation {
    /// Situation 1: bare metal with a remapping unit; IMS allowed.
    BareMetal,
    /// Situation 2: a hypervisor whose vIOMMU emulates remapping, no vIR; MSI and MSI-X are
    /// trapped, IMS refused.
    Emulated(NoVirReason),
    /// Situation 3: vIR negotiated and confirmed.
    Vir(Session),
    /// No remapping at all (no unit described, and no vIR): compatibility-format MSI and MSI-X
    /// only, no IMS.
    NoRemapping(Option<NoVirReason>),
}

impl IrSituation {
    /// Whether IMS may be offered in this situation before looking at the features: bare metal,
    /// or vIR (where the session must also carry an IMS feature).
    pub const fn ims_possible(&self) -> bool {
        matches!(self, Self::BareMetal | Self::Vir(_))
    }
}

/// Decides the situation: discovery through `cpu` (the hypervisor bit first, `VIR-DISC-G-001`),
/// then, only when the vIR leaves are found, `negotiate` with the interface found (typically
/// [`VirDomain::negotiate`](crate::VirDomain::negotiate)). `remapping_unit` says whether the
/// firmware describes a remapping unit with interrupt remapping (ACPI DMAR).
pub fn select_ir_domain<C, F>(cpu: &mut C, remapping_unit: bool, negotiate: F) -> IrSituation
where
    C: Cpuid + ?Sized,
    F: FnOnce(&VirInterface) -> Result<Session, NegotiationError>,
{
    let no_vir = match discover(cpu) {
        Ok(Platform::BareMetal) => {
            return if remapping_unit {
                IrSituation::BareMetal
            } else {
                IrSituation::NoRemapping(None)
            };
        }
        Ok(Platform::Vir(iface)) => match negotiate(&iface) {
            Ok(session) => return IrSituation::Vir(session),
            Err(e) => NoVirReason::Negotiation(e),
        },
        Ok(Platform::HypervisorWithoutVir) => NoVirReason::NotOffered,
        Err(e) => NoVirReason::Discovery(e),
    };
    if remapping_unit {
        IrSituation::Emulated(no_vir)
    } else {
        IrSituation::NoRemapping(Some(no_vir))
    }
}

/// One of the three remapping domains, behind one type.
#[derive(Debug)]
pub enum IrDomain<B, E, V> {
    /// Situation 1 ([`BareMetalVtdDomain`](crate::BareMetalVtdDomain)).
    BareMetal(B),
    /// Situation 2 ([`EmulatedVtdDomain`](crate::EmulatedVtdDomain)).
    Emulated(E),
    /// Situation 3 ([`VirDomain`](crate::VirDomain)).
    Vir(V),
}

macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            IrDomain::BareMetal($d) => $e,
            IrDomain::Emulated($d) => $e,
            IrDomain::Vir($d) => $e,
        }
    };
}

impl<B: RemapDomain, E: RemapDomain, V: RemapDomain> RemapDomain for IrDomain<B, E, V> {
    fn supports_ims(&self) -> bool {
        each!(self, d => d.supports_ims())
    }
    fn supports(&self, storage: StorageType) -> bool {
        each!(self, d => d.supports(storage))
    }
    fn supports_reservation(&self) -> bool {
        each!(self, d => d.supports_reservation())
    }
    fn max_msi_log2(&self) -> u8 {
        each!(self, d => d.max_msi_log2())
    }
    fn alloc(&mut self, slot: IrSlot) -> Result<AllocationId, DomainError> {
        each!(self, d => d.alloc(slot))
    }
    fn activate(
        &mut self,
        id: AllocationId,
        sub: u16,
        how: Activation,
    ) -> Result<MsiMessage, DomainError> {
        each!(self, d => d.activate(id, sub, how))
    }
    fn set_affinity(
        &mut self,
        id: AllocationId,
        sub: u16,
        target: IrqTarget,
    ) -> Result<(), DomainError> {
        each!(self, d => d.set_affinity(id, sub, target))
    }
    fn deactivate(&mut self, id: AllocationId, sub: u16) -> Result<(), DomainError> {
        each!(self, d => d.deactivate(id, sub))
    }
    fn free(&mut self, id: AllocationId) -> Result<(), DomainError> {
        each!(self, d => d.free(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use vir_abi::discovery::{CPUID1_ECX_HYPERVISOR, InfoLeaf, binding, signature_regs};
    use vir_abi::feature::Features;
    use vir_abi::wire::MessageFormat;

    use crate::discovery::CpuidResult;
    use crate::hypercall::CallError;

    struct Table(BTreeMap<u32, CpuidResult>, u32);

    impl Cpuid for Table {
        fn cpuid(&mut self, leaf: u32, _: u32) -> CpuidResult {
            self.1 += 1;
            self.0.get(&leaf).copied().unwrap_or_default()
        }
    }

    fn cpu(hypervisor: bool, vir: bool) -> Table {
        let mut t = BTreeMap::new();
        t.insert(
            1,
            CpuidResult {
                ecx: if hypervisor { CPUID1_ECX_HYPERVISOR } else { 0 },
                ..Default::default()
            },
        );
        if vir {
            let [ebx, ecx, edx] = signature_regs();
            t.insert(
                0x4000_0100,
                CpuidResult {
                    eax: 0x4000_0101,
                    ebx,
                    ecx,
                    edx,
                },
            );
            let [eax, ebx, ecx, edx] = InfoLeaf {
                min_version: 1,
                max_version: 1,
                bindings: binding::VMCALL,
                doorbell_port: 0,
            }
            .encode();
            t.insert(0x4000_0101, CpuidResult { eax, ebx, ecx, edx });
        }
        Table(t, 0)
    }

    const SESSION: Session = Session {
        version: 1,
        features: Features::V1_DEFINED,
        session: 1,
        message_format: MessageFormat::VTD_REMAPPABLE,
        max_msi_log2: 5,
        irte_quota: 256,
        vector_quota: 256,
    };

    const REFUSED: NegotiationError = NegotiationError::Negotiate(CallError {
        call: vir_abi::call::CallCode::NEGOTIATE,
        status: vir_abi::status::Status::INVALID_STATE,
    });

    #[test]
    fn vir_leg_g_001_bare_metal_is_situation_1_without_reading_the_hypervisor_range() {
        // VIR-DISC-G-001: only leaf 1 is read; negotiation is never attempted.
        let mut c = cpu(false, true);
        let s = select_ir_domain(&mut c, true, |_| panic!("no negotiation on bare metal"));
        assert_eq!(s, IrSituation::BareMetal);
        assert!(s.ims_possible());
        assert_eq!(c.1, 1);
        let mut c = cpu(false, false);
        assert_eq!(
            select_ir_domain(&mut c, false, |_| Ok(SESSION)),
            IrSituation::NoRemapping(None)
        );
    }

    #[test]
    fn vir_leg_g_002_hypervisor_without_vir_is_situation_2() {
        let mut c = cpu(true, false);
        let s = select_ir_domain(&mut c, true, |_| Ok(SESSION));
        assert_eq!(s, IrSituation::Emulated(NoVirReason::NotOffered));
        assert!(!s.ims_possible());
        let mut c = cpu(true, false);
        assert_eq!(
            select_ir_domain(&mut c, false, |_| Ok(SESSION)),
            IrSituation::NoRemapping(Some(NoVirReason::NotOffered))
        );
    }

    #[test]
    fn vir_neg_g_002_confirmed_negotiation_is_situation_3_failed_is_situation_2() {
        let mut c = cpu(true, true);
        let mut seen = None;
        let s = select_ir_domain(&mut c, false, |i| {
            seen = Some(i.base);
            Ok(SESSION)
        });
        assert_eq!(s, IrSituation::Vir(SESSION));
        assert!(s.ims_possible());
        assert_eq!(seen, Some(0x4000_0100));
        let mut c = cpu(true, true);
        let s = select_ir_domain(&mut c, true, |_| Err(REFUSED));
        assert_eq!(s, IrSituation::Emulated(NoVirReason::Negotiation(REFUSED)));
        assert!(!s.ims_possible());
    }

    #[test]
    fn unusable_vir_leaves_fall_back_to_the_emulated_unit() {
        let mut c = cpu(true, true);
        // Version range 2..=3: nothing this guest speaks.
        let [eax, ebx, ecx, edx] = InfoLeaf {
            min_version: 2,
            max_version: 3,
            bindings: binding::VMCALL,
            doorbell_port: 0,
        }
        .encode();
        c.0.insert(0x4000_0101, CpuidResult { eax, ebx, ecx, edx });
        let s = select_ir_domain(&mut c, true, |_| panic!("not negotiated"));
        assert_eq!(
            s,
            IrSituation::Emulated(NoVirReason::Discovery(DiscoveryError::NoSupportedVersion {
                base: 0x4000_0100,
                min: 2,
                max: 3
            }))
        );
    }
}
