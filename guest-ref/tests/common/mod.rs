//! Test fixtures: a deterministic host model answering per the design notes, a storage model
//! that remembers what the guest wrote, and a `World` tying them to the guest's subsystem so
//! that a device can "fire" an interrupt end to end.
//!
//! The host model is deliberately small (one VT-d-like table, no physical side) — it is not the
//! reference host (`vir-host`), only an oracle for the guest's behaviour. It follows the
//! validation orders of the specification (spec/vir-v1.md), so a guest that sends a malformed call sees the status a
//! conforming host would return.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::RemappableMsi;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    FreeRequest, MessageFormat, NegotiateRequest, NegotiateResponse, QueryResponse, QuotaResponse,
    SetAffinityRequest, StorageKind, TARGET_VECTOR_MIN, activate_flags, call_layout, vm_state,
};
use vir_guest::{
    CpuId, DeviceId, Hypervisor, InterruptStorage, Irq, IrqConfig, IrqSubsystem, NegotiationError,
    Session, StorageError, StorageSlot, StorageType, VirDomain,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// What a device has: sizes of each storage (0 = absent).
#[derive(Clone, Copy, Debug)]
pub struct DeviceSpec {
    pub msi_vectors: u32,
    pub msix_size: u32,
    pub ims_device_size: u32,
    pub ims_system_size: u32,
}

pub const FULL: DeviceSpec = DeviceSpec {
    msi_vectors: 32,
    msix_size: 16,
    ims_device_size: 64,
    ims_system_size: 4096,
};

/// Device 0000:01:00.0 with every storage type.
pub const DEV_A: DeviceId = DeviceId(0x0000_0100);
/// Device 0000:02:00.0 with every storage type.
pub const DEV_B: DeviceId = DeviceId(0x0000_0200);
/// A device the host does not assign to the VM (the guest's storage model has it).
pub const DEV_FOREIGN: DeviceId = DeviceId(0x0000_0900);
/// Device 0000:03:00.0 with MSI-X only.
pub const DEV_MSIX_ONLY: DeviceId = DeviceId(0x0000_0300);

/// APIC ids of the four vCPUs: logical CPU i has APIC id 2*i.
pub const APIC_IDS: [u32; 4] = [0, 2, 4, 6];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostVec {
    Allocated,
    Reserved,
    Active { apic_id: u32, vector: u8 },
}

#[derive(Clone, Debug)]
pub struct HostAlloc {
    pub device: u32,
    pub kind: StorageKind,
    pub index: u32,
    pub base: u32,
    pub subs: Vec<HostVec>,
}

#[derive(Clone, Debug)]
pub struct LoggedCall {
    pub code: CallCode,
    pub request: Vec<u8>,
    pub status: Status,
}

/// The host oracle.
#[derive(Debug)]
pub struct HostModel {
    pub offered: Features,
    pub min_version: u16,
    pub max_version: u16,
    pub max_msi_log2: u8,
    pub devices: BTreeMap<u32, DeviceSpec>,
    pub vcpus: Vec<u32>,
    pub irte_quota: u32,
    pub vector_quota: u32,
    pub table: Vec<bool>,
    pub negotiated: Option<(u16, Features)>,
    pub session: u32,
    pub allocs: BTreeMap<u32, HostAlloc>,
    pub next_handle: u32,
    pub vectors_used: u32,
    /// Test hook, per code, consumed one entry per call: `Some(status)` answers the status
    /// without doing anything, `None` lets the call through.
    pub inject: BTreeMap<CallCode, VecDeque<Option<Status>>>,
    /// Test hook: NEGOTIATE confirms these features instead of echoing.
    pub confirm_override: Option<Features>,
    pub log: Vec<LoggedCall>,
}

impl HostModel {
    pub fn new() -> Self {
        let mut devices = BTreeMap::new();
        devices.insert(DEV_A.0, FULL);
        devices.insert(DEV_B.0, FULL);
        devices.insert(
            DEV_MSIX_ONLY.0,
            DeviceSpec {
                msi_vectors: 0,
                msix_size: 8,
                ims_device_size: 0,
                ims_system_size: 0,
            },
        );
        HostModel {
            offered: Features::V1_DEFINED,
            min_version: 1,
            max_version: 1,
            max_msi_log2: 5,
            devices,
            vcpus: APIC_IDS.to_vec(),
            irte_quota: 256,
            vector_quota: 256,
            table: vec![false; 1024],
            negotiated: None,
            session: 0,
            allocs: BTreeMap::new(),
            next_handle: 0x100,
            vectors_used: 0,
            inject: BTreeMap::new(),
            confirm_override: None,
            log: Vec::new(),
        }
    }

    /// The next call of `code` fails with `status` (queued per code).
    pub fn fail_next(&mut self, code: CallCode, status: Status) {
        self.inject.entry(code).or_default().push_back(Some(status));
    }

    /// The next call of `code` (after those already queued) is handled normally.
    pub fn pass_next(&mut self, code: CallCode) {
        self.inject.entry(code).or_default().push_back(None);
    }

    pub fn calls(&self) -> Vec<CallCode> {
        self.log.iter().map(|c| c.code).collect()
    }

    pub fn count(&self, code: CallCode) -> usize {
        self.log.iter().filter(|c| c.code == code).count()
    }

    /// Entries held by the VM's live allocations (what the quota counts).
    pub fn irtes_used(&self) -> u32 {
        self.allocs.values().map(|a| a.subs.len() as u32).sum()
    }

    /// The state behind a physical IRTE index.
    pub fn irte(&self, index: u32) -> Option<HostVec> {
        self.allocs.values().find_map(|a| {
            let off = index.checked_sub(a.base)?;
            a.subs.get(off as usize).copied()
        })
    }

    fn message(base: u32) -> MsiMessage {
        RemappableMsi {
            handle: base as u16,
            shv: true,
            subhandle: 0,
        }
        .encode()
    }

    pub fn handle(&mut self, code: CallCode, req: &[u8], resp: &mut [u8]) -> Status {
        let status = self.dispatch(code, req, resp);
        self.log.push(LoggedCall {
            code,
            request: req.to_vec(),
            status,
        });
        status
    }

    fn dispatch(&mut self, code: CallCode, req: &[u8], resp: &mut [u8]) -> Status {
        // VIR-CALL-H-001 common order.
        let Some(layout) = call_layout(code) else {
            return Status::UNKNOWN_CALL;
        };
        if req.len() != layout.request_len() as usize
            || resp.len() != layout.response_len() as usize
        {
            return Status::BAD_LENGTH;
        }
        if !code.allowed_in_legacy() && self.negotiated.is_none() {
            return Status::NOT_NEGOTIATED;
        }
        if code == CallCode::QUERY_QUOTA && !self.has(Features::QUOTA_QUERY) {
            return Status::FEATURE_NOT_NEGOTIATED;
        }
        if let Some(Some(s)) = self.inject.get_mut(&code).and_then(|q| q.pop_front()) {
            return s;
        }
        match code {
            CallCode::QUERY => self.query(resp),
            CallCode::NEGOTIATE => self.negotiate(req, resp),
            CallCode::RESET => {
                self.allocs.clear();
                self.table.iter_mut().for_each(|e| *e = false);
                self.vectors_used = 0;
                self.negotiated = None;
                Status::SUCCESS
            }
            CallCode::ALLOCATE => self.allocate(req, resp),
            CallCode::ACTIVATE => self.activate(req, resp),
            CallCode::SET_AFFINITY => self.set_affinity(req),
            CallCode::DEACTIVATE => self.deactivate(req),
            CallCode::FREE => self.free(req),
            CallCode::QUERY_QUOTA => {
                let used = self.irtes_used();
                let r = QuotaResponse {
                    irtes_total: U32::new(self.irte_quota),
                    irtes_free: U32::new(self.irte_quota - used),
                    vectors_total: U32::new(self.vector_quota),
                    vectors_free: U32::new(self.vector_quota - self.vectors_used),
                };
                resp.copy_from_slice(r.as_bytes());
                Status::SUCCESS
            }
            _ => Status::UNKNOWN_CALL,
        }
    }

    fn has(&self, f: Features) -> bool {
        self.negotiated.is_some_and(|(_, n)| n.contains(f))
    }

    fn query(&mut self, resp: &mut [u8]) -> Status {
        let (v, f) = self.negotiated.unwrap_or((0, Features::NONE));
        let r = QueryResponse {
            min_version: U16::new(self.min_version),
            max_version: U16::new(self.max_version),
            message_format: MessageFormat::VTD_REMAPPABLE.0,
            max_msi_log2: self.max_msi_log2,
            vm_state: if self.negotiated.is_some() {
                vm_state::NEGOTIATED
            } else {
                vm_state::LEGACY
            },
            features_offered: U64::new(self.offered.0),
            features_active: U64::new(f.0),
            active_version: U16::new(v),
            irte_quota: U32::new(self.irte_quota),
            vector_quota: U32::new(self.vector_quota),
            ..Default::default()
        };
        resp.copy_from_slice(r.as_bytes());
        Status::SUCCESS
    }

    fn negotiate(&mut self, req: &[u8], resp: &mut [u8]) -> Status {
        let r = NegotiateRequest::read_from_bytes(req).unwrap();
        if r.reserved0.get() != 0 || r.reserved1.get() != 0 {
            return Status::INVALID_PARAMETER;
        }
        if self.negotiated.is_some() {
            return Status::ALREADY_NEGOTIATED;
        }
        let v = r.version.get();
        if v < self.min_version || v > self.max_version {
            return Status::UNSUPPORTED_VERSION;
        }
        let f = Features(r.features.get());
        if !self.offered.contains(f) {
            return Status::UNSUPPORTED_FEATURE;
        }
        let committed = self.confirm_override.unwrap_or(f);
        self.negotiated = Some((v, committed));
        self.session += 1;
        let c = NegotiateResponse {
            version: U16::new(v),
            reserved0: U16::ZERO,
            session: U32::new(self.session),
            features: U64::new(committed.0),
        };
        resp.copy_from_slice(c.as_bytes());
        Status::SUCCESS
    }

    fn allocate(&mut self, req: &[u8], resp: &mut [u8]) -> Status {
        let r = AllocateRequest::read_from_bytes(req).unwrap();
        if r.reserved0.get() != 0 || r.reserved1.get() != 0 {
            return Status::INVALID_PARAMETER;
        }
        let kind = StorageKind(r.kind);
        let Some(feature) = kind.gating_feature() else {
            return Status::INVALID_PARAMETER;
        };
        if !self.has(feature) {
            return Status::FEATURE_NOT_NEGOTIATED;
        }
        let (log2, index) = (r.log2_count, r.index.get());
        let msi = kind == StorageKind::MSI;
        if (!msi && log2 != 0) || (msi && (log2 > self.max_msi_log2 || index != 0)) {
            return Status::INVALID_PARAMETER;
        }
        let Some(spec) = self.devices.get(&r.device_id.get()).copied() else {
            return Status::NOT_YOUR_DEVICE;
        };
        let size = match kind {
            StorageKind::MSI => spec.msi_vectors,
            StorageKind::MSIX => spec.msix_size,
            StorageKind::IMS_DEVICE => spec.ims_device_size,
            _ => spec.ims_system_size,
        };
        if size == 0 {
            return Status::STORAGE_NOT_PRESENT;
        }
        let count = 1u32 << log2;
        if (msi && count > size) || (!msi && index >= size) {
            return Status::INVALID_INDEX;
        }
        let device = r.device_id.get();
        if self
            .allocs
            .values()
            .any(|a| a.device == device && a.kind == kind && (msi || a.index == index))
        {
            return Status::INDEX_IN_USE;
        }
        if self.irtes_used() + count > self.irte_quota {
            return Status::QUOTA_EXCEEDED;
        }
        let Some(base) = (0..self.table.len() as u32)
            .step_by(count as usize)
            .find(|&b| {
                (b..b + count).all(|i| !self.table.get(i as usize).copied().unwrap_or(true))
            })
        else {
            return Status::TABLE_FULL;
        };
        for i in base..base + count {
            self.table[i as usize] = true;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.allocs.insert(
            handle,
            HostAlloc {
                device,
                kind,
                index,
                base,
                subs: vec![HostVec::Allocated; count as usize],
            },
        );
        let a = AllocateResponse {
            handle: U32::new(handle),
            count: U16::new(count as u16),
            reserved0: U16::ZERO,
        };
        resp.copy_from_slice(a.as_bytes());
        Status::SUCCESS
    }

    fn activate(&mut self, req: &[u8], resp: &mut [u8]) -> Status {
        let r = ActivateRequest::read_from_bytes(req).unwrap();
        let flags = r.flags.get();
        if flags & !activate_flags::V1_DEFINED != 0 || !r.target.reserved_is_zero() {
            return Status::INVALID_PARAMETER;
        }
        let reservation = self.has(Features::RESERVATION);
        let vectors_used = self.vectors_used;
        let vector_quota = self.vector_quota;
        let known_apic = self.vcpus.contains(&r.target.apic_id.get());
        let Some(a) = self.allocs.get_mut(&r.handle.get()) else {
            return Status::INVALID_HANDLE;
        };
        let sub = r.subhandle.get() as usize;
        let Some(state) = a.subs.get(sub).copied() else {
            return Status::INVALID_SUBHANDLE;
        };
        let reserve = flags & activate_flags::RESERVE != 0;
        if reserve && !reservation {
            return Status::FEATURE_NOT_NEGOTIATED;
        }
        let ok_state = if reserve {
            state == HostVec::Allocated
        } else {
            !matches!(state, HostVec::Active { .. })
        };
        if !ok_state {
            return Status::INVALID_STATE;
        }
        let new = if reserve {
            HostVec::Reserved
        } else {
            let vector = r.target.vector;
            if !known_apic || vector < TARGET_VECTOR_MIN {
                return Status::INVALID_TARGET;
            }
            if vectors_used >= vector_quota {
                return Status::VECTORS_EXHAUSTED;
            }
            HostVec::Active {
                apic_id: r.target.apic_id.get(),
                vector,
            }
        };
        a.subs[sub] = new;
        let msg = Self::message(a.base);
        if !reserve {
            self.vectors_used += 1;
        }
        let out = ActivateResponse {
            address_lo: U32::new(msg.address_lo),
            address_hi: U32::new(msg.address_hi),
            data: U32::new(msg.data),
            format: MessageFormat::VTD_REMAPPABLE.0,
            ..Default::default()
        };
        resp.copy_from_slice(out.as_bytes());
        Status::SUCCESS
    }

    fn set_affinity(&mut self, req: &[u8]) -> Status {
        let r = SetAffinityRequest::read_from_bytes(req).unwrap();
        if r.reserved0.get() != 0 || !r.target.reserved_is_zero() {
            return Status::INVALID_PARAMETER;
        }
        let known_apic = self.vcpus.contains(&r.target.apic_id.get());
        let Some(a) = self.allocs.get_mut(&r.handle.get()) else {
            return Status::INVALID_HANDLE;
        };
        let sub = r.subhandle.get() as usize;
        let Some(state) = a.subs.get(sub).copied() else {
            return Status::INVALID_SUBHANDLE;
        };
        if !matches!(state, HostVec::Active { .. }) {
            return Status::INVALID_STATE;
        }
        if !known_apic || r.target.vector < TARGET_VECTOR_MIN {
            return Status::INVALID_TARGET;
        }
        a.subs[sub] = HostVec::Active {
            apic_id: r.target.apic_id.get(),
            vector: r.target.vector,
        };
        Status::SUCCESS
    }

    fn deactivate(&mut self, req: &[u8]) -> Status {
        let r = DeactivateRequest::read_from_bytes(req).unwrap();
        if r.reserved0.get() != 0 {
            return Status::INVALID_PARAMETER;
        }
        let Some(a) = self.allocs.get_mut(&r.handle.get()) else {
            return Status::INVALID_HANDLE;
        };
        let sub = r.subhandle.get() as usize;
        let Some(state) = a.subs.get(sub).copied() else {
            return Status::INVALID_SUBHANDLE;
        };
        match state {
            HostVec::Allocated => return Status::INVALID_STATE,
            HostVec::Active { .. } => self.vectors_used -= 1,
            HostVec::Reserved => {}
        }
        a.subs[sub] = HostVec::Allocated;
        Status::SUCCESS
    }

    fn free(&mut self, req: &[u8]) -> Status {
        let r = FreeRequest::read_from_bytes(req).unwrap();
        if r.reserved0.get() != 0 {
            return Status::INVALID_PARAMETER;
        }
        let Some(a) = self.allocs.remove(&r.handle.get()) else {
            return Status::INVALID_HANDLE;
        };
        for (i, s) in a.subs.iter().enumerate() {
            if matches!(s, HostVec::Active { .. }) {
                self.vectors_used -= 1;
            }
            self.table[a.base as usize + i] = false;
        }
        Status::SUCCESS
    }
}

/// The transport into the host model.
pub struct FakeHv(pub Rc<RefCell<HostModel>>);

impl Hypervisor for FakeHv {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        self.0.borrow_mut().handle(code, request, response)
    }
}

/// What the guest wrote into devices.
#[derive(Debug, Default)]
pub struct StorageModel {
    pub devices: BTreeMap<DeviceId, DeviceSpec>,
    pub messages: BTreeMap<(DeviceId, StorageSlot), MsiMessage>,
    pub writes: Vec<(DeviceId, StorageSlot, MsiMessage)>,
    /// Mask bits of MSI-X and IMS slots (a slot never masked or unmasked counts as masked:
    /// MSI-X entries come out of reset masked).
    pub masked: BTreeMap<(DeviceId, StorageSlot), bool>,
    pub msi_enabled: BTreeMap<DeviceId, u32>,
    /// Test hook: the next message write fails.
    pub fail_next_write: bool,
    /// Test hook: the next mask or unmask fails.
    pub fail_next_mask: bool,
}

impl StorageModel {
    pub fn new() -> Self {
        let mut devices = BTreeMap::new();
        for d in [DEV_A, DEV_B, DEV_FOREIGN] {
            devices.insert(d, FULL);
        }
        devices.insert(
            DEV_MSIX_ONLY,
            DeviceSpec {
                msi_vectors: 0,
                msix_size: 8,
                ims_device_size: 0,
                ims_system_size: 0,
            },
        );
        StorageModel {
            devices,
            ..Default::default()
        }
    }

    fn check(&self, device: DeviceId, slot: StorageSlot) -> Result<(), StorageError> {
        let spec = self
            .devices
            .get(&device)
            .ok_or(StorageError::NoSuchDevice(device))?;
        let size = match slot {
            StorageSlot::Msi => spec.msi_vectors,
            StorageSlot::MsiX(_) => spec.msix_size,
            StorageSlot::ImsDevice(_) => spec.ims_device_size,
            StorageSlot::ImsSystem(_) => spec.ims_system_size,
        };
        if size == 0 {
            return Err(StorageError::NoStorage {
                device,
                storage: slot.storage_type(),
            });
        }
        if slot != StorageSlot::Msi && slot.index() >= size {
            return Err(StorageError::IndexOutOfRange { device, slot, size });
        }
        Ok(())
    }
}

/// The storage accessor over the model.
pub struct FakeStorage(pub Rc<RefCell<StorageModel>>);

impl InterruptStorage for FakeStorage {
    fn write_message(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError> {
        let mut s = self.0.borrow_mut();
        s.check(device, slot)?;
        if std::mem::take(&mut s.fail_next_write) {
            return Err(StorageError::NoSuchDevice(device));
        }
        s.messages.insert((device, slot), message);
        s.writes.push((device, slot, message));
        Ok(())
    }

    fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<(), StorageError> {
        let mut s = self.0.borrow_mut();
        s.check(device, slot)?;
        if slot == StorageSlot::Msi {
            return Err(StorageError::NotMaskable { device, slot });
        }
        if std::mem::take(&mut s.fail_next_mask) {
            return Err(StorageError::NoSuchDevice(device));
        }
        s.masked.insert((device, slot), masked);
        Ok(())
    }

    fn msi_enable(&mut self, device: DeviceId, nvec: u32) -> Result<(), StorageError> {
        let mut s = self.0.borrow_mut();
        s.check(device, StorageSlot::Msi)?;
        let max = s.devices[&device].msi_vectors;
        if nvec == 0 || nvec > max || !nvec.is_power_of_two() {
            return Err(StorageError::InvalidVectorCount { device, nvec, max });
        }
        s.msi_enabled.insert(device, nvec);
        Ok(())
    }

    fn msi_disable(&mut self, device: DeviceId) -> Result<(), StorageError> {
        let mut s = self.0.borrow_mut();
        s.check(device, StorageSlot::Msi)?;
        s.msi_enabled.remove(&device);
        Ok(())
    }
}

/// The outcome of a device raising an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fire {
    /// Delivered to the guest and mapped to this irq.
    Irq(Irq),
    /// Delivered to (cpu, vector) where the guest has no irq.
    Spurious(CpuId, u8),
    /// The storage holds no message (never written).
    NoMessage,
    /// MSI-X or IMS entry masked, or MSI disabled: the device does not send.
    Masked,
    /// The IRTE blocks it (reserved, deactivated, or absent).
    Blocked,
}

pub type Guest = IrqSubsystem<VirDomain<FakeHv>, FakeStorage>;

/// Host, storage and guest together.
pub struct World {
    pub host: Rc<RefCell<HostModel>>,
    pub storage: Rc<RefCell<StorageModel>>,
    pub guest: Guest,
}

impl World {
    /// A world with every v1 feature offered and negotiated.
    pub fn new() -> Self {
        let (w, r) = Self::build(
            HostModel::new(),
            Features::V1_DEFINED,
            IrqConfig::new(APIC_IDS.to_vec()),
        );
        r.expect("negotiation");
        w
    }

    /// A world where the host offers `offered` (negotiated with everything known).
    pub fn offering(offered: Features) -> Self {
        let mut host = HostModel::new();
        host.offered = offered;
        let (w, r) = Self::build(
            host,
            Features::V1_DEFINED,
            IrqConfig::new(APIC_IDS.to_vec()),
        );
        r.expect("negotiation");
        w
    }

    /// Builds a world; negotiation's outcome is returned, the guest is built either way.
    pub fn build(
        host: HostModel,
        wanted: Features,
        config: IrqConfig,
    ) -> (Self, Result<Session, NegotiationError>) {
        let host = Rc::new(RefCell::new(host));
        let storage = Rc::new(RefCell::new(StorageModel::new()));
        let mut domain = VirDomain::new(FakeHv(host.clone()));
        let r = domain.negotiate(wanted);
        let guest = IrqSubsystem::new(domain, FakeStorage(storage.clone()), config).unwrap();
        (
            World {
                host,
                storage,
                guest,
            },
            r,
        )
    }

    /// Device `device` raises vector `sub` of the interrupt stored in `slot`: the message in its
    /// storage (MSI: data + sub) goes through the host's table to a vCPU, and the guest maps
    /// (cpu, vector) back to an irq.
    pub fn fire(&mut self, device: DeviceId, slot: StorageSlot, sub: u16) -> Fire {
        let msg = {
            let s = self.storage.borrow();
            let Some(&m) = s.messages.get(&(device, slot)) else {
                return Fire::NoMessage;
            };
            match slot {
                StorageSlot::Msi => match s.msi_enabled.get(&device) {
                    Some(&n) if u32::from(sub) < n => {}
                    _ => return Fire::Masked,
                },
                _ if s.masked.get(&(device, slot)).copied().unwrap_or(true) => {
                    return Fire::Masked;
                }
                _ => {}
            }
            let data = if slot == StorageSlot::Msi {
                m.data | u32::from(sub)
            } else {
                m.data
            };
            MsiMessage { data, ..m }
        };
        let decoded = RemappableMsi::decode(msg).expect("guest wrote a remappable message");
        let index = u32::from(decoded.irte_index());
        let target = self.host.borrow().irte(index);
        match target {
            Some(HostVec::Active { apic_id, vector }) => {
                let cpu = self
                    .guest
                    .cpu_of_apic(apic_id)
                    .expect("host targets a vCPU");
                match self.guest.handle_interrupt(cpu, vector) {
                    Some(irq) => Fire::Irq(irq),
                    None => Fire::Spurious(cpu, vector),
                }
            }
            _ => Fire::Blocked,
        }
    }

    /// Message writes the storage model saw.
    pub fn storage_writes(&self) -> usize {
        self.storage.borrow().writes.len()
    }

    /// The host's calls since `from` (an index into its log).
    pub fn calls_since(&self, from: usize) -> Vec<CallCode> {
        self.host.borrow().log[from..]
            .iter()
            .map(|c| c.code)
            .collect()
    }

    pub fn log_len(&self) -> usize {
        self.host.borrow().log.len()
    }

    /// Every call whose status was not SUCCESS (a guest bug if it was a guest-caused status).
    pub fn failed_calls(&self) -> Vec<(CallCode, Status)> {
        self.host
            .borrow()
            .log
            .iter()
            .filter(|c| c.status != Status::SUCCESS)
            .map(|c| (c.code, c.status))
            .collect()
    }

    pub fn storage_type_allocs(&self, kind: StorageType) -> usize {
        self.host
            .borrow()
            .allocs
            .values()
            .filter(|a| a.kind == kind.wire_kind())
            .count()
    }
}
