//! Deliberately broken hosts: the reference host with one behaviour broken each, to show that
//! the suite catches the departure and names the requirement it breaks.
//!
//! Each [`Breakage`] wraps [`ReferenceHost`] and changes what one call does, the way a real
//! implementation bug would: answering an unknown code, skipping the reserved-field check,
//! checking the device before the kind, leaking a route on a failed activation, writing the
//! response on failure, resolving a handle in the wrong VM, reading the request twice, echoing
//! the wrong session number, enabling MSI with a message the host did not issue.

use vir_abi::call::CallCode;
use vir_abi::status::Status;
use vir_abi::wire::activate_flags;
use vir_host::{RouteTarget, VirtualRouting};
use vm_memory::{Bytes, GuestAddress};

use crate::reference::{ReferenceConfig, ReferenceHost};
use vir_conform::checks::{request_desc, reserved_ranges};
use vir_conform::hut::{
    Buffer, CapRegister, DeviceInterrupts, Fault, Fixture, HarnessError, HostFactory,
    HostUnderTest, HypercallInsn, IoWidth, IrteView, MSI_ENABLE, MemAccess, PhysEvent, Regs, Scope,
    SetupError, Snapshot, VmRef,
};

/// One broken behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Breakage {
    /// Returns SUCCESS for every code that is not a version 1 call.
    SucceedUnknownCalls,
    /// Ignores reserved request fields and undefined flags (clears them before processing).
    SkipReservedCheck,
    /// Checks ALLOCATE's device before its kind, feature and shape.
    DeviceCheckBeforeKind,
    /// Leaves a virtual route behind when an ACTIVATE fails after the common steps.
    LeakOnFailedActivate,
    /// Writes zeros over the response buffer when a call fails.
    WriteResponseOnFailure,
    /// Resolves a handle unknown to the calling VM in the other VM.
    AcceptForeignHandles,
    /// Reads the request once to peek at it and then again to process it.
    ReadRequestTwice,
    /// Reports a session number one too high in the NEGOTIATE response.
    WrongSessionNumber,
    /// Enables a device's MSI in NEGOTIATED whatever message the guest wrote (it substitutes
    /// the issued one instead of refusing the enable).
    AcceptAnyMsiEnable,
}

impl Breakage {
    /// Every breakage.
    pub const ALL: [Breakage; 9] = [
        Breakage::SucceedUnknownCalls,
        Breakage::SkipReservedCheck,
        Breakage::DeviceCheckBeforeKind,
        Breakage::LeakOnFailedActivate,
        Breakage::WriteResponseOnFailure,
        Breakage::AcceptForeignHandles,
        Breakage::ReadRequestTwice,
        Breakage::WrongSessionNumber,
        Breakage::AcceptAnyMsiEnable,
    ];

    /// The kebab-case name (for `vir conform --host mutant:NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::SucceedUnknownCalls => "succeed-unknown-calls",
            Self::SkipReservedCheck => "skip-reserved-check",
            Self::DeviceCheckBeforeKind => "device-check-before-kind",
            Self::LeakOnFailedActivate => "leak-on-failed-activate",
            Self::WriteResponseOnFailure => "write-response-on-failure",
            Self::AcceptForeignHandles => "accept-foreign-handles",
            Self::ReadRequestTwice => "read-request-twice",
            Self::WrongSessionNumber => "wrong-session-number",
            Self::AcceptAnyMsiEnable => "accept-any-msi-enable",
        }
    }

    /// The breakage with this name.
    pub fn from_name(name: &str) -> Option<Breakage> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The requirement the breakage violates (a run against it must fail this one).
    pub const fn requirement(self) -> &'static str {
        match self {
            Self::SucceedUnknownCalls => "VIR-CALL-H-002",
            Self::SkipReservedCheck => "VIR-CALL-H-005",
            Self::DeviceCheckBeforeKind => "VIR-ALC-H-001",
            Self::LeakOnFailedActivate => "VIR-ACT-H-007",
            Self::WriteResponseOnFailure => "VIR-CALL-H-007",
            Self::AcceptForeignHandles => "VIR-SEC-H-004",
            Self::ReadRequestTwice => "VIR-MEM-H-007",
            Self::WrongSessionNumber => "VIR-NEG-H-007",
            Self::AcceptAnyMsiEnable => "VIR-LEG-H-003",
        }
    }
}

/// The reference host with one [`Breakage`].
#[derive(Debug)]
pub struct MutantHost {
    inner: ReferenceHost,
    breakage: Breakage,
}

impl MutantHost {
    /// Break `inner`.
    pub fn new(inner: ReferenceHost, breakage: Breakage) -> Self {
        MutantHost { inner, breakage }
    }

    fn other(vm: VmRef) -> VmRef {
        match vm {
            VmRef::Primary => VmRef::Secondary,
            VmRef::Secondary => VmRef::Primary,
        }
    }

    fn read(&self, vm: VmRef, b: Buffer) -> Option<Vec<u8>> {
        let len = usize::try_from(b.len).ok().filter(|&l| l <= 64)?;
        let mut buf = vec![0; len];
        self.inner
            .memory(vm)
            .inner()
            .read_slice(&mut buf, GuestAddress(b.gpa))
            .ok()?;
        Some(buf)
    }

    fn write(&self, vm: VmRef, gpa: u64, bytes: &[u8]) {
        let _ = self
            .inner
            .memory(vm)
            .inner()
            .write_slice(bytes, GuestAddress(gpa));
    }

    fn negotiated(&self, vm: VmRef) -> bool {
        self.inner
            .host()
            .vm(self.inner.vm_id(vm))
            .is_some_and(|v| v.state() != vir_host::VmState::Legacy)
    }
}

impl HostUnderTest for MutantHost {
    fn name(&self) -> String {
        format!("{} broken: {}", self.inner.name(), self.breakage.name())
    }

    fn fixture(&self) -> &Fixture {
        self.inner.fixture()
    }

    fn call(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        code: CallCode,
        request: Buffer,
        response: Buffer,
    ) -> Result<Status, HarnessError> {
        match self.breakage {
            Breakage::SucceedUnknownCalls if !code.is_v1() => Ok(Status::SUCCESS),
            Breakage::SkipReservedCheck => {
                let original = self.read(vm, request);
                let desc = request_desc(code);
                if let (Some(orig), Some(desc)) = (&original, desc)
                    && orig.len() == desc.size
                {
                    let mut clean = orig.clone();
                    for (_, at, len) in reserved_ranges(&desc) {
                        if let Some(r) = clean.get_mut(at..at + len) {
                            r.fill(0);
                        }
                    }
                    if code == CallCode::ACTIVATE
                        && let Some(f) = clean.get_mut(6..8)
                    {
                        let v = u16::from_le_bytes([f[0], f[1]]) & activate_flags::V1_DEFINED;
                        f.copy_from_slice(&v.to_le_bytes());
                    }
                    self.write(vm, request.gpa, &clean);
                    let s = self.inner.call(vm, vcpu, code, request, response);
                    self.write(vm, request.gpa, orig);
                    return s;
                }
                self.inner.call(vm, vcpu, code, request, response)
            }
            Breakage::DeviceCheckBeforeKind if code == CallCode::ALLOCATE => {
                let s = self.inner.call(vm, vcpu, code, request, response)?;
                let Some(req) = self.read(vm, request).filter(|r| r.len() == 16) else {
                    return Ok(s);
                };
                let device = u32::from_le_bytes([req[0], req[1], req[2], req[3]]);
                let reserved_clear = req[6..8].iter().chain(&req[12..16]).all(|&b| b == 0);
                let assigned = self
                    .inner
                    .fixture()
                    .vm(vm)
                    .is_some_and(|f| f.devices.iter().any(|d| d.device_id == device));
                let kind_step = matches!(
                    s,
                    Status::INVALID_PARAMETER | Status::FEATURE_NOT_NEGOTIATED
                );
                if kind_step && reserved_clear && !assigned && self.negotiated(vm) {
                    return Ok(Status::NOT_YOUR_DEVICE);
                }
                Ok(s)
            }
            Breakage::LeakOnFailedActivate if code == CallCode::ACTIVATE => {
                let s = self.inner.call(vm, vcpu, code, request, response)?;
                if matches!(
                    s,
                    Status::INVALID_TARGET | Status::VECTORS_EXHAUSTED | Status::BACKEND_FAILURE
                ) {
                    let id = self.inner.vm_id(vm);
                    let target = RouteTarget {
                        vcpu_index: 0,
                        apic_id: 0,
                        vector: 0x20,
                    };
                    let _ = self.inner.host_mut().routing_mut().add_route(id, target);
                }
                Ok(s)
            }
            Breakage::WriteResponseOnFailure => {
                let s = self.inner.call(vm, vcpu, code, request, response)?;
                if s != Status::SUCCESS
                    && response.len != 0
                    && response.len <= 64
                    && response.gpa.checked_add(response.len).is_some()
                {
                    self.write(vm, response.gpa, &vec![0; response.len as usize]);
                }
                Ok(s)
            }
            Breakage::AcceptForeignHandles
                if matches!(
                    code,
                    CallCode::ACTIVATE
                        | CallCode::SET_AFFINITY
                        | CallCode::DEACTIVATE
                        | CallCode::FREE
                ) =>
            {
                let s = self.inner.call(vm, vcpu, code, request, response)?;
                let other = Self::other(vm);
                let Some(req) = self.read(vm, request) else {
                    return Ok(s);
                };
                if s != Status::INVALID_HANDLE || self.inner.fixture().vm(other).is_none() {
                    return Ok(s);
                }
                // A global handle namespace: look in the other VM.
                let saved = self.read(other, request);
                self.write(other, request.gpa, &req);
                let s2 = self.inner.call(other, 0, code, request, response)?;
                if let Some(r) = self.read(other, response) {
                    self.write(vm, response.gpa, &r);
                }
                if let Some(saved) = saved {
                    self.write(other, request.gpa, &saved);
                }
                Ok(s2)
            }
            Breakage::ReadRequestTwice => {
                if request.len != 0 && request.len <= 64 {
                    // A peek through the host's own path (logged, and it triggers mutations).
                    let mut peek = vec![0; request.len as usize];
                    let _ = self
                        .inner
                        .memory(vm)
                        .read_slice(&mut peek, GuestAddress(request.gpa));
                }
                self.inner.call(vm, vcpu, code, request, response)
            }
            Breakage::WrongSessionNumber if code == CallCode::NEGOTIATE => {
                let s = self.inner.call(vm, vcpu, code, request, response)?;
                if s == Status::SUCCESS
                    && let Some(r) = self.read(vm, response).filter(|r| r.len() == 16)
                {
                    let session = u32::from_le_bytes([r[4], r[5], r[6], r[7]]).wrapping_add(1);
                    self.write(vm, response.gpa + 4, &session.to_le_bytes());
                }
                Ok(s)
            }
            _ => self.inner.call(vm, vcpu, code, request, response),
        }
    }

    fn hypercall(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        insn: HypercallInsn,
        cpl: u8,
        regs: &mut Regs,
    ) -> Result<(), HarnessError> {
        self.inner.hypercall(vm, vcpu, insn, cpl, regs)
    }

    fn pio_write(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        port: u16,
        width: IoWidth,
        value: u32,
    ) -> Result<(), HarnessError> {
        self.inner.pio_write(vm, vcpu, port, width, value)
    }

    fn pio_read(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        port: u16,
        width: IoWidth,
    ) -> Result<u32, HarnessError> {
        self.inner.pio_read(vm, vcpu, port, width)
    }

    fn cpuid(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        leaf: u32,
        subleaf: u32,
    ) -> Result<[u32; 4], HarnessError> {
        self.inner.cpuid(vm, vcpu, leaf, subleaf)
    }

    fn read_guest(&mut self, vm: VmRef, gpa: u64, buf: &mut [u8]) -> Result<(), HarnessError> {
        self.inner.read_guest(vm, gpa, buf)
    }

    fn write_guest(&mut self, vm: VmRef, gpa: u64, bytes: &[u8]) -> Result<(), HarnessError> {
        self.inner.write_guest(vm, gpa, bytes)
    }

    fn reset_vm(&mut self, vm: VmRef) -> Result<(), HarnessError> {
        self.inner.reset_vm(vm)
    }

    fn snapshot(&mut self, scope: Scope) -> Result<Snapshot, HarnessError> {
        self.inner.snapshot(scope)
    }

    fn irte(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<IrteView>, HarnessError> {
        self.inner.irte(vm, handle, subhandle)
    }

    fn present_irtes(&mut self) -> Result<Vec<IrteView>, HarnessError> {
        self.inner.present_irtes()
    }

    fn delivery(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<vir_conform::hut::Delivery>, HarnessError> {
        self.inner.delivery(vm, handle, subhandle)
    }

    fn start_access_log(&mut self, vm: VmRef) -> Result<(), HarnessError> {
        self.inner.start_access_log(vm)
    }

    fn take_access_log(&mut self, vm: VmRef) -> Result<Vec<MemAccess>, HarnessError> {
        self.inner.take_access_log(vm)
    }

    fn mutate_after_first_read(
        &mut self,
        vm: VmRef,
        watch: Buffer,
        gpa: u64,
        bytes: &[u8],
    ) -> Result<(), HarnessError> {
        self.inner.mutate_after_first_read(vm, watch, gpa, bytes)
    }

    fn inject_failure(&mut self, fault: Fault) -> Result<(), HarnessError> {
        self.inner.inject_failure(fault)
    }

    fn start_physical_log(&mut self) -> Result<(), HarnessError> {
        self.inner.start_physical_log()
    }

    fn take_physical_log(&mut self) -> Result<Vec<PhysEvent>, HarnessError> {
        self.inner.take_physical_log()
    }

    fn set_legacy_interrupt(
        &mut self,
        vm: VmRef,
        device_id: u32,
        enabled: bool,
    ) -> Result<(), HarnessError> {
        self.inner.set_legacy_interrupt(vm, device_id, enabled)
    }

    fn msix_trapped(&mut self, vm: VmRef, device_id: u32) -> Result<bool, HarnessError> {
        self.inner.msix_trapped(vm, device_id)
    }

    fn config_write(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
        value: u32,
    ) -> Result<(), HarnessError> {
        let enabling = register == CapRegister::MsiControl && value & MSI_ENABLE != 0;
        if self.breakage == Breakage::AcceptAnyMsiEnable && enabling && self.negotiated(vm) {
            let issued = self
                .inner
                .host()
                .vm(self.inner.vm_id(vm))
                .and_then(|v| v.msi_message_issued(device_id));
            if let Some(m) = issued {
                self.inner
                    .config_write(vm, device_id, CapRegister::MsiAddressLo, m.address_lo)?;
                self.inner
                    .config_write(vm, device_id, CapRegister::MsiAddressHi, m.address_hi)?;
                self.inner
                    .config_write(vm, device_id, CapRegister::MsiData, m.data)?;
            }
        }
        self.inner.config_write(vm, device_id, register, value)
    }

    fn config_read(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
    ) -> Result<u32, HarnessError> {
        self.inner.config_read(vm, device_id, register)
    }

    fn device_interrupts(
        &mut self,
        vm: VmRef,
        device_id: u32,
    ) -> Result<DeviceInterrupts, HarnessError> {
        self.inner.device_interrupts(vm, device_id)
    }
}

/// Creates [`MutantHost`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutantFactory {
    /// The reference configuration underneath.
    pub config: ReferenceConfig,
    /// What is broken.
    pub breakage: Breakage,
}

impl HostFactory for MutantFactory {
    fn name(&self) -> String {
        format!("reference broken: {}", self.breakage.name())
    }

    fn create(&mut self) -> Result<Box<dyn HostUnderTest>, SetupError> {
        ReferenceHost::new(self.config, None)
            .map(|h| Box::new(MutantHost::new(h, self.breakage)) as Box<dyn HostUnderTest>)
            .map_err(|e| SetupError(Box::new(e)))
    }

    fn create_variant(
        &mut self,
        variant: vir_conform::hut::Variant,
    ) -> Result<Option<Box<dyn HostUnderTest>>, SetupError> {
        ReferenceHost::new(self.config, Some(variant))
            .map(|h| Some(Box::new(MutantHost::new(h, self.breakage)) as Box<dyn HostUnderTest>))
            .map_err(|e| SetupError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakage_names_round_trip_and_name_distinct_requirements() {
        let mut ids = std::collections::BTreeSet::new();
        for b in Breakage::ALL {
            assert_eq!(Breakage::from_name(b.name()), Some(b));
            ids.insert(b.requirement());
        }
        assert_eq!(ids.len(), Breakage::ALL.len());
        assert_eq!(Breakage::from_name("nope"), None);
    }

    #[test]
    fn succeed_unknown_calls_answers_without_the_host() {
        let inner = ReferenceHost::new(ReferenceConfig::default(), None).unwrap();
        let mut m = MutantHost::new(inner, Breakage::SucceedUnknownCalls);
        let s = m.call(
            VmRef::Primary,
            0,
            CallCode(0x20),
            Buffer::NONE,
            Buffer::NONE,
        );
        assert_eq!(s, Ok(Status::SUCCESS));
        let s = m.call(
            VmRef::Primary,
            0,
            CallCode::RESET,
            Buffer::NONE,
            Buffer::NONE,
        );
        assert_eq!(s, Ok(Status::NOT_NEGOTIATED));
        assert_eq!(
            m.name(),
            "reference (posted, x2APIC) broken: succeed-unknown-calls"
        );
    }
}
