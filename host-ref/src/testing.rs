//! In-memory backends and guest-side helpers for tests and conformance suites.
//!
//! * [`MockIrteTable`], [`MockRouting`], [`MockPhysicalIrqs`]: simple implementations of the
//!   three backend traits. They keep exactly the state a real backend would (entries, routes,
//!   started IRQs and the vectors they hold per CPU), deliver nothing, and offer failure
//!   injection per operation ([`MockRouting::fail_next`], [`MockPhysicalIrqs::fail_next`]) and a
//!   configurable host vector capacity per physical CPU. Allocation of GSIs, IRQ ids and vectors
//!   is lowest-free-first, so an unwound step leaves a mock exactly as it was.
//! * [`Journal`]: an optional shared log of every backend event, to check ordering (for example
//!   that a posted IRTE is written only after the route and the IRQ exist).
//! * [`CountingMemory`]: a [`GuestMemory`] wrapper that logs every access, to show that a request
//!   is read exactly once and that a failing call writes no response.
//! * [`Caller`]: builds requests in guest memory and performs calls through
//!   [`Host::handle_call`], as a guest would.
//! * [`MockDeviceStorage`]: the physical interrupt storage the legacy trap code programs, with a
//!   log of every write.
//!
//! * [`invariants`]: the one host invariant checker ([`invariants::check_host`]), comparing the
//!   host's bookkeeping with what the mock backends hold.
//!
//! Nothing here is meant for production: these types favour inspectability over speed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    FreeRequest, NegotiateRequest, NegotiateResponse, QueryResponse, QuotaResponse,
    SetAffinityRequest, Target, activate_flags, call_layout,
};
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryResult, Permissions,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::backend::{
    BackendError, BackendOp, Gsi, HostIrq, HostIrqId, HostVector, IrqSource, IrteTable,
    IrteTableId, PhysicalIrqs, RouteTarget, VirtualRouting, VmId,
};
use crate::config::{ConfigError, HostConfig};
use crate::host::Host;

mod device_storage;
pub mod invariants;
pub use device_storage::{MockDeviceStorage, PhysicalDevice, StorageWrite};

/// A backend event, as logged in a [`Journal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An IRTE was written (and invalidated).
    IrteWrite {
        /// The table.
        table: IrteTableId,
        /// Table index.
        index: u32,
        /// Raw entry.
        entry: u128,
    },
    /// A route was added.
    AddRoute {
        /// VM.
        vm: VmId,
        /// GSI allocated.
        gsi: Gsi,
        /// Its target.
        target: RouteTarget,
    },
    /// A route was re-targeted.
    UpdateRoute {
        /// VM.
        vm: VmId,
        /// GSI.
        gsi: Gsi,
        /// New target.
        target: RouteTarget,
    },
    /// A route was removed.
    RemoveRoute {
        /// VM.
        vm: VmId,
        /// GSI.
        gsi: Gsi,
    },
    /// A physical IRQ was started.
    StartIrq {
        /// VM.
        vm: VmId,
        /// Source.
        source: IrqSource,
        /// GSI signalled.
        gsi: Gsi,
        /// The IRQ.
        irq: HostIrq,
    },
    /// A physical IRQ was stopped.
    StopIrq {
        /// The IRQ.
        irq: HostIrqId,
    },
    /// A move was prepared.
    PrepareAffinity {
        /// The IRQ.
        irq: HostIrqId,
        /// Vector reserved on the new CPU.
        vector: HostVector,
    },
    /// A move was committed.
    CommitAffinity {
        /// The IRQ.
        irq: HostIrqId,
    },
    /// A move was aborted.
    AbortAffinity {
        /// The IRQ.
        irq: HostIrqId,
    },
    /// A fallible operation failed (injected or real).
    Failed {
        /// The operation.
        op: BackendOp,
        /// The error returned.
        error: BackendError,
    },
}

/// A shared, cloneable event log (clones log into the same list).
///
/// The log is bounded: it keeps the latest [`Journal::capacity`] events and counts the older
/// ones it dropped, so a long-running user (the KVM demo) does not grow it without bound.
/// [`Journal::drain`] takes the events out.
#[derive(Debug, Clone)]
pub struct Journal(Arc<Mutex<JournalLog>>);

#[derive(Debug)]
struct JournalLog {
    events: VecDeque<Event>,
    capacity: usize,
    dropped: u64,
}

impl Default for Journal {
    /// An empty journal of [`Journal::DEFAULT_CAPACITY`] events.
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl Journal {
    /// Events a journal keeps unless told otherwise.
    pub const DEFAULT_CAPACITY: usize = 1 << 16;

    /// An empty journal of [`Journal::DEFAULT_CAPACITY`] events.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty journal that keeps the latest `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Journal(Arc::new(Mutex::new(JournalLog {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        })))
    }

    fn log(&self) -> std::sync::MutexGuard<'_, JournalLog> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, e: Event) {
        let mut log = self.log();
        if log.events.len() >= log.capacity {
            log.events.pop_front();
            log.dropped = log.dropped.saturating_add(1);
        }
        log.events.push_back(e);
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.log().events.iter().cloned().collect()
    }

    /// Take the events kept, oldest first, leaving the journal empty.
    pub fn drain(&self) -> Vec<Event> {
        self.log().events.drain(..).collect()
    }

    /// Forget every event kept.
    pub fn clear(&self) {
        self.log().events.clear();
    }

    /// How many events the journal keeps at most.
    pub fn capacity(&self) -> usize {
        self.log().capacity
    }

    /// How many old events were dropped to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.log().dropped
    }
}

/// Planned failures: the next `n` calls of an operation fail with a given error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Faults(BTreeMap<BackendOp, (u32, BackendError)>);

impl Faults {
    fn plan(&mut self, op: BackendOp, n: u32, error: BackendError) {
        if n == 0 {
            self.0.remove(&op);
        } else {
            self.0.insert(op, (n, error));
        }
    }

    fn take(&mut self, op: BackendOp) -> Option<BackendError> {
        let (n, error) = self.0.get_mut(&op)?;
        let error = *error;
        *n -= 1;
        if *n == 0 {
            self.0.remove(&op);
        }
        Some(error)
    }

    fn pending(&self, op: BackendOp) -> u32 {
        self.0.get(&op).map_or(0, |&(n, _)| n)
    }
}

/// In-memory remapping tables: the unit's table ([`IrteTableId::Unit`], VT-d) and, created
/// on first write, one table per device ([`IrteTableId::Device`], AMD-Vi), each of the same
/// size.
#[derive(Debug, Clone)]
pub struct MockIrteTable {
    size: u32,
    tables: BTreeMap<IrteTableId, Vec<u128>>,
    writes: u64,
    invalid_writes: u64,
    journal: Journal,
}

impl MockIrteTable {
    /// Tables of `size` entries, all zero.
    pub fn new(size: u32) -> Self {
        MockIrteTable {
            size,
            tables: BTreeMap::from([(IrteTableId::Unit, vec![0; size as usize])]),
            writes: 0,
            invalid_writes: 0,
            journal: Journal::new(),
        }
    }

    /// Log writes to `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// Every entry of the unit's table (VT-d).
    pub fn entries(&self) -> &[u128] {
        self.table_entries(IrteTableId::Unit)
    }

    /// Every entry of `table` (empty for a device table never written).
    pub fn table_entries(&self, table: IrteTableId) -> &[u128] {
        self.tables.get(&table).map_or(&[], Vec::as_slice)
    }

    /// The tables written so far (the unit's table always).
    pub fn tables(&self) -> impl Iterator<Item = IrteTableId> + '_ {
        self.tables.keys().copied()
    }

    /// One entry of the unit's table (`None` out of range).
    pub fn entry(&self, index: u32) -> Option<u128> {
        self.entry_in(IrteTableId::Unit, index)
    }

    /// One entry of `table` (`None` out of range; 0 in a device table never written).
    pub fn entry_in(&self, table: IrteTableId, index: u32) -> Option<u128> {
        if index >= self.size {
            return None;
        }
        Some(
            self.tables
                .get(&table)
                .and_then(|t| t.get(index as usize))
                .copied()
                .unwrap_or(0),
        )
    }

    /// Number of writes.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Writes to an index `>= size` (a host bug; 0 in a correct run).
    pub fn invalid_writes(&self) -> u64 {
        self.invalid_writes
    }
}

impl IrteTable for MockIrteTable {
    fn size(&self) -> u32 {
        self.size
    }

    fn write(&mut self, table: IrteTableId, index: u32, entry: u128) {
        if index >= self.size {
            self.invalid_writes += 1;
            return;
        }
        let size = self.size as usize;
        let t = self.tables.entry(table).or_insert_with(|| vec![0; size]);
        if let Some(e) = t.get_mut(index as usize) {
            *e = entry;
            self.writes += 1;
            self.journal.push(Event::IrteWrite {
                table,
                index,
                entry,
            });
        }
    }

    fn read(&self, table: IrteTableId, index: u32) -> Option<u128> {
        self.entry_in(table, index)
    }
}

/// KVM-like routing in memory: per VM, GSIs from [`MockRouting::FIRST_GSI`] up.
#[derive(Debug, Clone)]
pub struct MockRouting {
    routes: BTreeMap<(VmId, Gsi), RouteTarget>,
    capacity: u32,
    faults: Faults,
    invalid_calls: u64,
    journal: Journal,
}

impl Default for MockRouting {
    fn default() -> Self {
        Self::new()
    }
}

impl MockRouting {
    /// First GSI handed out (0–23 belong to the IOAPIC).
    pub const FIRST_GSI: u32 = 24;

    /// Routing with room for 4096 routes per VM.
    pub fn new() -> Self {
        MockRouting {
            routes: BTreeMap::new(),
            capacity: 4096,
            faults: Faults::default(),
            invalid_calls: 0,
            journal: Journal::new(),
        }
    }

    /// Limit every VM to `capacity` routes.
    pub fn with_capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// Log to `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// Make the next `n` calls of `op` ([`BackendOp::AddRoute`] or [`BackendOp::UpdateRoute`])
    /// fail with `error` (`n = 0` cancels the plan). Plans for other operations never trigger.
    pub fn fail_next(&mut self, op: BackendOp, n: u32, error: BackendError) {
        self.faults.plan(op, n, error);
    }

    /// Planned failures left for `op`.
    pub fn failures_pending(&self, op: BackendOp) -> u32 {
        self.faults.pending(op)
    }

    /// Every route.
    pub fn routes(&self) -> &BTreeMap<(VmId, Gsi), RouteTarget> {
        &self.routes
    }

    /// One route.
    pub fn route(&self, vm: VmId, gsi: Gsi) -> Option<RouteTarget> {
        self.routes.get(&(vm, gsi)).copied()
    }

    /// Routes of one VM.
    pub fn routes_of(&self, vm: VmId) -> usize {
        self.routes.keys().filter(|(v, _)| *v == vm).count()
    }

    /// Calls naming an unknown route (a host bug; 0 in a correct run).
    pub fn invalid_calls(&self) -> u64 {
        self.invalid_calls
    }

    fn fail(&mut self, op: BackendOp) -> Result<(), BackendError> {
        match self.faults.take(op) {
            Some(error) => {
                self.journal.push(Event::Failed { op, error });
                Err(error)
            }
            None => Ok(()),
        }
    }
}

impl VirtualRouting for MockRouting {
    fn add_route(&mut self, vm: VmId, target: RouteTarget) -> Result<Gsi, BackendError> {
        self.fail(BackendOp::AddRoute)?;
        if self.routes_of(vm) >= self.capacity as usize {
            let error = BackendError::RoutesExhausted {
                capacity: self.capacity,
            };
            self.journal.push(Event::Failed {
                op: BackendOp::AddRoute,
                error,
            });
            return Err(error);
        }
        let mut gsi = Self::FIRST_GSI;
        while self.routes.contains_key(&(vm, Gsi(gsi))) {
            gsi += 1;
        }
        self.routes.insert((vm, Gsi(gsi)), target);
        self.journal.push(Event::AddRoute {
            vm,
            gsi: Gsi(gsi),
            target,
        });
        Ok(Gsi(gsi))
    }

    fn update_route(
        &mut self,
        vm: VmId,
        gsi: Gsi,
        target: RouteTarget,
    ) -> Result<(), BackendError> {
        self.fail(BackendOp::UpdateRoute)?;
        let Some(route) = self.routes.get_mut(&(vm, gsi)) else {
            self.invalid_calls += 1;
            return Err(BackendError::UnknownGsi(gsi));
        };
        *route = target;
        self.journal.push(Event::UpdateRoute { vm, gsi, target });
        Ok(())
    }

    fn remove_route(&mut self, vm: VmId, gsi: Gsi) {
        if self.routes.remove(&(vm, gsi)).is_some() {
            self.journal.push(Event::RemoveRoute { vm, gsi });
        } else {
            self.invalid_calls += 1;
        }
    }
}

/// A started IRQ of [`MockPhysicalIrqs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockIrq {
    /// Owning VM.
    pub vm: VmId,
    /// Source.
    pub source: IrqSource,
    /// GSI it signals.
    pub gsi: Gsi,
    /// The vector it fires on.
    pub vector: HostVector,
    /// A prepared move, if any.
    pub pending: Option<HostVector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MockCpu {
    apic_id: u32,
    capacity: u32,
    used: BTreeSet<u8>,
}

/// VFIO-like physical IRQs in memory, with a vector allocator per physical CPU.
#[derive(Debug, Clone)]
pub struct MockPhysicalIrqs {
    cpus: Vec<MockCpu>,
    irqs: BTreeMap<HostIrqId, MockIrq>,
    faults: Faults,
    invalid_calls: u64,
    journal: Journal,
}

impl MockPhysicalIrqs {
    /// First device vector handed out on a CPU.
    pub const FIRST_VECTOR: u8 = 0x20;
    /// Last device vector (Linux: 0xEB and up are system vectors).
    pub const LAST_VECTOR: u8 = 0xEA;

    /// `ncpus` CPUs (APIC id = CPU index) with `vectors_per_cpu` device vectors each (capped at
    /// the 203 vectors `0x20..=0xEA`).
    pub fn new(ncpus: u32, vectors_per_cpu: u32) -> Self {
        let cpus = (0..ncpus)
            .map(|c| MockCpu {
                apic_id: c,
                capacity: vectors_per_cpu,
                used: BTreeSet::new(),
            })
            .collect();
        MockPhysicalIrqs {
            cpus,
            irqs: BTreeMap::new(),
            faults: Faults::default(),
            invalid_calls: 0,
            journal: Journal::new(),
        }
    }

    /// Give CPU `cpu` the APIC id `apic_id` (ignored for an unknown CPU).
    pub fn set_apic_id(&mut self, cpu: u32, apic_id: u32) {
        if let Some(c) = self.cpus.get_mut(cpu as usize) {
            c.apic_id = apic_id;
        }
    }

    /// Set the vector capacity of CPU `cpu` (vectors in use stay in use).
    pub fn set_capacity(&mut self, cpu: u32, vectors: u32) {
        if let Some(c) = self.cpus.get_mut(cpu as usize) {
            c.capacity = vectors;
        }
    }

    /// Log to `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// Make the next `n` calls of `op` ([`BackendOp::StartIrq`] or
    /// [`BackendOp::PrepareAffinity`]) fail with `error` (`n = 0` cancels the plan).
    pub fn fail_next(&mut self, op: BackendOp, n: u32, error: BackendError) {
        self.faults.plan(op, n, error);
    }

    /// Planned failures left for `op`.
    pub fn failures_pending(&self, op: BackendOp) -> u32 {
        self.faults.pending(op)
    }

    /// Every started IRQ.
    pub fn irqs(&self) -> &BTreeMap<HostIrqId, MockIrq> {
        &self.irqs
    }

    /// One started IRQ.
    pub fn irq(&self, id: HostIrqId) -> Option<&MockIrq> {
        self.irqs.get(&id)
    }

    /// Vectors in use on CPU `cpu` (including prepared moves).
    pub fn vectors_in_use(&self, cpu: u32) -> BTreeSet<u8> {
        self.cpus
            .get(cpu as usize)
            .map(|c| c.used.clone())
            .unwrap_or_default()
    }

    /// Calls naming an unknown IRQ or a move that was not prepared (a host bug; 0 in a correct
    /// run).
    pub fn invalid_calls(&self) -> u64 {
        self.invalid_calls
    }

    fn fail(&mut self, op: BackendOp) -> Result<(), BackendError> {
        match self.faults.take(op) {
            Some(error) => Err(self.failed(op, error)),
            None => Ok(()),
        }
    }

    /// Log a failure and return its error.
    fn failed(&mut self, op: BackendOp, error: BackendError) -> BackendError {
        self.journal.push(Event::Failed { op, error });
        error
    }

    fn alloc_vector(&mut self, op: BackendOp, cpu: u32) -> Result<HostVector, BackendError> {
        let Some(c) = self.cpus.get_mut(cpu as usize) else {
            return Err(self.failed(op, BackendError::Os { op, errno: 22 }));
        };
        let span = u32::from(Self::LAST_VECTOR - Self::FIRST_VECTOR) + 1;
        let limit = c.capacity.min(span) as u8;
        let free = (0..limit)
            .map(|i| Self::FIRST_VECTOR + i)
            .find(|v| !c.used.contains(v));
        match free {
            Some(vector) => {
                c.used.insert(vector);
                Ok(HostVector {
                    cpu,
                    apic_id: c.apic_id,
                    vector,
                })
            }
            None => Err(self.failed(op, BackendError::VectorsExhausted { cpu })),
        }
    }

    fn free_vector(&mut self, v: HostVector) {
        if let Some(c) = self.cpus.get_mut(v.cpu as usize) {
            c.used.remove(&v.vector);
        }
    }
}

impl PhysicalIrqs for MockPhysicalIrqs {
    fn start(
        &mut self,
        vm: VmId,
        source: IrqSource,
        gsi: Gsi,
        cpu: u32,
    ) -> Result<HostIrq, BackendError> {
        self.fail(BackendOp::StartIrq)?;
        if self.irqs.values().any(|i| i.source == source) {
            let busy = BackendError::Os {
                op: BackendOp::StartIrq,
                errno: 16,
            };
            return Err(self.failed(BackendOp::StartIrq, busy));
        }
        let vector = self.alloc_vector(BackendOp::StartIrq, cpu)?;
        let mut id = 1;
        while self.irqs.contains_key(&HostIrqId(id)) {
            id += 1;
        }
        let irq = HostIrq {
            id: HostIrqId(id),
            vector,
        };
        self.irqs.insert(
            irq.id,
            MockIrq {
                vm,
                source,
                gsi,
                vector,
                pending: None,
            },
        );
        self.journal.push(Event::StartIrq {
            vm,
            source,
            gsi,
            irq,
        });
        Ok(irq)
    }

    fn stop(&mut self, irq: HostIrqId) {
        match self.irqs.remove(&irq) {
            Some(i) => {
                self.free_vector(i.vector);
                if let Some(p) = i.pending {
                    self.free_vector(p);
                }
                self.journal.push(Event::StopIrq { irq });
            }
            None => self.invalid_calls += 1,
        }
    }

    fn prepare_affinity(&mut self, irq: HostIrqId, cpu: u32) -> Result<HostVector, BackendError> {
        self.fail(BackendOp::PrepareAffinity)?;
        match self.irqs.get(&irq) {
            None => {
                self.invalid_calls += 1;
                return Err(BackendError::UnknownIrq(irq));
            }
            Some(i) if i.pending.is_some() => {
                let busy = BackendError::Os {
                    op: BackendOp::PrepareAffinity,
                    errno: 16,
                };
                return Err(self.failed(BackendOp::PrepareAffinity, busy));
            }
            Some(_) => {}
        }
        let vector = self.alloc_vector(BackendOp::PrepareAffinity, cpu)?;
        if let Some(i) = self.irqs.get_mut(&irq) {
            i.pending = Some(vector);
        }
        self.journal.push(Event::PrepareAffinity { irq, vector });
        Ok(vector)
    }

    fn commit_affinity(&mut self, irq: HostIrqId) {
        let old = self.irqs.get_mut(&irq).and_then(|i| {
            let new = i.pending.take()?;
            Some(core::mem::replace(&mut i.vector, new))
        });
        let Some(old) = old else {
            self.invalid_calls += 1;
            return;
        };
        self.free_vector(old);
        self.journal.push(Event::CommitAffinity { irq });
    }

    fn abort_affinity(&mut self, irq: HostIrqId) {
        match self.irqs.get_mut(&irq).and_then(|i| i.pending.take()) {
            Some(p) => {
                self.free_vector(p);
                self.journal.push(Event::AbortAffinity { irq });
            }
            None => self.invalid_calls += 1,
        }
    }
}

/// A host over the mock backends.
pub type MockHost = Host<MockIrteTable, MockRouting, MockPhysicalIrqs>;

/// Build a [`MockHost`]: a table of `table_size` entries, `ncpus` physical CPUs with
/// `vectors_per_cpu` vectors each, the three mocks logging to the returned [`Journal`].
pub fn mock_host(
    config: HostConfig,
    table_size: u32,
    ncpus: u32,
    vectors_per_cpu: u32,
) -> Result<(MockHost, Journal), ConfigError> {
    let journal = Journal::new();
    let table = MockIrteTable::new(table_size).with_journal(journal.clone());
    let routing = MockRouting::new().with_journal(journal.clone());
    let irqs = MockPhysicalIrqs::new(ncpus, vectors_per_cpu).with_journal(journal.clone());
    Ok((Host::new(config, table, routing, irqs)?, journal))
}

/// The comparable state of the three mocks (no counters, plans or journals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockState {
    /// Every IRTE of the unit's table (VT-d).
    pub irtes: Vec<u128>,
    /// Every IRTE of each device table written so far (AMD-Vi), by requester id.
    pub device_irtes: BTreeMap<u16, Vec<u128>>,
    /// Every route.
    pub routes: BTreeMap<(VmId, Gsi), RouteTarget>,
    /// Every started IRQ.
    pub irqs: BTreeMap<HostIrqId, MockIrq>,
    /// Vectors in use, per CPU.
    pub vectors: Vec<BTreeSet<u8>>,
}

/// Capture the state of a [`MockHost`]'s backends.
pub fn mock_state(host: &MockHost) -> MockState {
    let irqs = host.irqs();
    MockState {
        irtes: host.table().entries().to_vec(),
        device_irtes: host
            .table()
            .tables
            .iter()
            .filter_map(|(t, e)| match t {
                IrteTableId::Unit => None,
                IrteTableId::Device(rid) => Some((*rid, e.clone())),
            })
            .collect(),
        routes: host.routing().routes().clone(),
        irqs: irqs.irqs().clone(),
        vectors: irqs.cpus.iter().map(|c| c.used.clone()).collect(),
    }
}

/// Guest RAM from GPA 0 to `size` (anonymous mapping).
///
/// # Panics
/// If the mapping cannot be created (a test environment problem).
pub fn guest_ram(size: usize) -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("anonymous guest RAM")
}

/// One logged guest-memory access of [`CountingMemory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Write (`true`) or read.
    pub write: bool,
    /// First byte.
    pub gpa: u64,
    /// Length.
    pub len: usize,
}

impl Access {
    fn overlaps(&self, gpa: u64, len: usize) -> bool {
        let (s, e) = (
            u128::from(self.gpa),
            u128::from(self.gpa) + self.len as u128,
        );
        let (os, oe) = (u128::from(gpa), u128::from(gpa) + len as u128);
        self.len != 0 && len != 0 && s < oe && os < e
    }
}

/// A [`GuestMemory`] that logs every read and write going through it (each `read_slice` /
/// `write_slice` / `read_obj` is one access) and otherwise behaves like the memory it wraps.
#[derive(Debug)]
pub struct CountingMemory<M> {
    inner: M,
    log: Mutex<Vec<Access>>,
}

impl<M: GuestMemory> CountingMemory<M> {
    /// Wrap `inner`.
    pub fn new(inner: M) -> Self {
        CountingMemory {
            inner,
            log: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped memory (accesses through it are not logged).
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Every access so far.
    pub fn accesses(&self) -> Vec<Access> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forget the log.
    pub fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Reads touching `[gpa, gpa + len)`.
    pub fn reads_of(&self, gpa: u64, len: usize) -> usize {
        self.accesses()
            .iter()
            .filter(|a| !a.write && a.overlaps(gpa, len))
            .count()
    }

    /// Writes touching `[gpa, gpa + len)`.
    pub fn writes_to(&self, gpa: u64, len: usize) -> usize {
        self.accesses()
            .iter()
            .filter(|a| a.write && a.overlaps(gpa, len))
            .count()
    }
}

impl<M: GuestMemory> GuestMemory for CountingMemory<M> {
    type PhysicalMemory = M::PhysicalMemory;
    type Bitmap = M::Bitmap;

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        self.inner.check_range(addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, Self::Bitmap>>> {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if access.allow(Permissions::Read) {
                log.push(Access {
                    write: false,
                    gpa: addr.0,
                    len: count,
                });
            }
            if access.allow(Permissions::Write) {
                log.push(Access {
                    write: true,
                    gpa: addr.0,
                    len: count,
                });
            }
        }
        self.inner.get_slices(addr, count, access)
    }

    fn physical_memory(&self) -> Option<&Self::PhysicalMemory> {
        self.inner.physical_memory()
    }
}

/// Byte written over the response buffer before each [`Caller`] call, so a test can see
/// whether the host wrote it (VIR-CALL-H-007).
pub const RESPONSE_FILL: u8 = 0xa5;

/// Performs calls of one VM through the memory binding, as a guest would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The calling VM.
    pub vm: VmId,
    /// Where requests are placed (8-aligned, room for 64 bytes within its page).
    pub request_gpa: u64,
    /// Where responses are placed (likewise, not overlapping the request).
    pub response_gpa: u64,
}

impl Caller {
    /// A caller with requests at GPA `0x1000` and responses at `0x2000`.
    pub fn new(vm: VmId) -> Self {
        Caller {
            vm,
            request_gpa: 0x1000,
            response_gpa: 0x2000,
        }
    }

    /// Place `request` in guest memory, fill the response buffer with [`RESPONSE_FILL`], call
    /// `code` with exactly these lengths (GPA 0 for an empty buffer) and return the status and
    /// the response buffer's bytes afterwards.
    ///
    /// # Panics
    /// If guest memory lacks the request or response page, or `vm` is unknown (test set-up
    /// errors).
    pub fn raw<T, R, P, M>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        code: CallCode,
        request: &[u8],
        response_len: usize,
    ) -> (Status, Vec<u8>)
    where
        T: IrteTable,
        R: VirtualRouting,
        P: PhysicalIrqs,
        M: GuestMemory + ?Sized,
    {
        let req_gpa = if request.is_empty() {
            0
        } else {
            self.request_gpa
        };
        let resp_gpa = if response_len == 0 {
            0
        } else {
            self.response_gpa
        };
        if !request.is_empty() {
            mem.write_slice(request, GuestAddress(req_gpa))
                .expect("request page in guest RAM");
        }
        let fill = vec![RESPONSE_FILL; response_len];
        if response_len != 0 {
            mem.write_slice(&fill, GuestAddress(resp_gpa))
                .expect("response page in guest RAM");
        }
        let status = host
            .handle_call(
                self.vm,
                mem,
                code,
                req_gpa,
                request.len() as u64,
                resp_gpa,
                response_len as u64,
            )
            .expect("known VM");
        let mut out = vec![0u8; response_len];
        if response_len != 0 {
            mem.read_slice(&mut out, GuestAddress(resp_gpa))
                .expect("response page in guest RAM");
        }
        (status, out)
    }

    fn typed<Rs: FromBytes, T, R, P, M>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        code: CallCode,
        request: &[u8],
    ) -> Result<Rs, Status>
    where
        T: IrteTable,
        R: VirtualRouting,
        P: PhysicalIrqs,
        M: GuestMemory + ?Sized,
    {
        let resp_len = call_layout(code).map_or(0, |l| l.response_len() as usize);
        let (status, bytes) = self.raw(host, mem, code, request, resp_len);
        if status != Status::SUCCESS {
            return Err(status);
        }
        Rs::read_from_bytes(&bytes).map_err(|_| Status::BAD_LENGTH)
    }

    /// `QUERY`.
    pub fn query<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
    ) -> Result<QueryResponse, Status> {
        self.typed(host, mem, CallCode::QUERY, &[])
    }

    /// `NEGOTIATE` with `version` and `features`.
    pub fn negotiate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        version: u16,
        features: Features,
    ) -> Result<NegotiateResponse, Status> {
        let req = NegotiateRequest {
            version: U16::new(version),
            reserved0: U16::ZERO,
            reserved1: U32::ZERO,
            features: U64::new(features.bits()),
        };
        self.typed(host, mem, CallCode::NEGOTIATE, req.as_bytes())
    }

    /// `RESET`.
    pub fn reset<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
    ) -> Result<(), Status> {
        self.unit(host, mem, CallCode::RESET, &[])
    }

    /// `ALLOCATE`.
    pub fn allocate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        device_id: u32,
        kind: vir_abi::wire::StorageKind,
        log2_count: u8,
        index: u32,
    ) -> Result<AllocateResponse, Status> {
        self.typed(
            host,
            mem,
            CallCode::ALLOCATE,
            allocate_request(device_id, kind, log2_count, index).as_bytes(),
        )
    }

    /// `ACTIVATE` (plain) of `subhandle` to `apic_id`/`vector`.
    #[allow(clippy::too_many_arguments)]
    pub fn activate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        handle: u32,
        subhandle: u16,
        apic_id: u32,
        vector: u8,
    ) -> Result<ActivateResponse, Status> {
        let req = activate_request(handle, subhandle, 0, Target::new(apic_id, vector));
        self.typed(host, mem, CallCode::ACTIVATE, req.as_bytes())
    }

    /// `ACTIVATE` with the `RESERVE` flag (target zero).
    pub fn reserve<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        handle: u32,
        subhandle: u16,
    ) -> Result<ActivateResponse, Status> {
        let req = activate_request(
            handle,
            subhandle,
            activate_flags::RESERVE,
            Target::new(0, 0),
        );
        self.typed(host, mem, CallCode::ACTIVATE, req.as_bytes())
    }

    /// `SET_AFFINITY`.
    #[allow(clippy::too_many_arguments)]
    pub fn set_affinity<
        T: IrteTable,
        R: VirtualRouting,
        P: PhysicalIrqs,
        M: GuestMemory + ?Sized,
    >(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        handle: u32,
        subhandle: u16,
        apic_id: u32,
        vector: u8,
    ) -> Result<(), Status> {
        let req = SetAffinityRequest {
            handle: U32::new(handle),
            subhandle: U16::new(subhandle),
            reserved0: U16::ZERO,
            target: Target::new(apic_id, vector),
        };
        self.unit(host, mem, CallCode::SET_AFFINITY, req.as_bytes())
    }

    /// `DEACTIVATE`.
    pub fn deactivate<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        handle: u32,
        subhandle: u16,
    ) -> Result<(), Status> {
        let req = DeactivateRequest {
            handle: U32::new(handle),
            subhandle: U16::new(subhandle),
            reserved0: U16::ZERO,
        };
        self.unit(host, mem, CallCode::DEACTIVATE, req.as_bytes())
    }

    /// `FREE`.
    pub fn free<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        handle: u32,
    ) -> Result<(), Status> {
        let req = FreeRequest {
            handle: U32::new(handle),
            reserved0: U32::ZERO,
        };
        self.unit(host, mem, CallCode::FREE, req.as_bytes())
    }

    /// `QUERY_QUOTA`.
    pub fn query_quota<
        T: IrteTable,
        R: VirtualRouting,
        P: PhysicalIrqs,
        M: GuestMemory + ?Sized,
    >(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
    ) -> Result<QuotaResponse, Status> {
        self.typed(host, mem, CallCode::QUERY_QUOTA, &[])
    }

    fn unit<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs, M: GuestMemory + ?Sized>(
        &self,
        host: &mut Host<T, R, P>,
        mem: &M,
        code: CallCode,
        request: &[u8],
    ) -> Result<(), Status> {
        match self.raw(host, mem, code, request, 0).0 {
            Status::SUCCESS => Ok(()),
            s => Err(s),
        }
    }
}

/// An `ALLOCATE` request with zero reserved fields.
pub fn allocate_request(
    device_id: u32,
    kind: vir_abi::wire::StorageKind,
    log2_count: u8,
    index: u32,
) -> AllocateRequest {
    AllocateRequest {
        device_id: U32::new(device_id),
        kind: kind.0,
        log2_count,
        reserved0: U16::ZERO,
        index: U32::new(index),
        reserved1: U32::ZERO,
    }
}

/// An `ACTIVATE` request.
pub fn activate_request(
    handle: u32,
    subhandle: u16,
    flags: u16,
    target: Target,
) -> ActivateRequest {
    ActivateRequest {
        handle: U32::new(handle),
        subhandle: U16::new(subhandle),
        flags: U16::new(flags),
        target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(slot: u32) -> IrqSource {
        IrqSource {
            requester_id: 0x100,
            kind: vir_abi::wire::StorageKind::MSIX,
            slot,
        }
    }

    #[test]
    fn routing_allocates_lowest_free_gsi_and_injects_failures() {
        let mut r = MockRouting::new().with_capacity(2);
        let t = RouteTarget {
            vcpu_index: 0,
            apic_id: 0,
            vector: 0x30,
        };
        let vm = VmId(0);
        assert_eq!(r.add_route(vm, t), Ok(Gsi(24)));
        assert_eq!(r.add_route(vm, t), Ok(Gsi(25)));
        assert_eq!(
            r.add_route(vm, t),
            Err(BackendError::RoutesExhausted { capacity: 2 })
        );
        assert_eq!(r.add_route(VmId(1), t), Ok(Gsi(24)), "per-VM GSI space");
        r.remove_route(vm, Gsi(24));
        let err = BackendError::Os {
            op: BackendOp::AddRoute,
            errno: 12,
        };
        r.fail_next(BackendOp::AddRoute, 2, err);
        assert_eq!(r.add_route(vm, t), Err(err));
        assert_eq!(r.failures_pending(BackendOp::AddRoute), 1);
        assert_eq!(r.add_route(vm, t), Err(err));
        assert_eq!(r.add_route(vm, t), Ok(Gsi(24)));
        assert_eq!(
            r.update_route(vm, Gsi(99), t),
            Err(BackendError::UnknownGsi(Gsi(99)))
        );
        assert_eq!(r.invalid_calls(), 1);
    }

    #[test]
    fn physical_irqs_respect_capacity_and_two_phase_moves() {
        let mut p = MockPhysicalIrqs::new(2, 2);
        p.set_apic_id(1, 0x101);
        let vm = VmId(0);
        let a = p.start(vm, src(0), Gsi(24), 0).unwrap();
        assert_eq!(
            a.vector,
            HostVector {
                cpu: 0,
                apic_id: 0,
                vector: 0x20
            }
        );
        let b = p.start(vm, src(1), Gsi(25), 0).unwrap();
        assert_eq!(b.vector.vector, 0x21);
        assert_eq!(
            p.start(vm, src(2), Gsi(26), 0),
            Err(BackendError::VectorsExhausted { cpu: 0 })
        );
        assert_eq!(
            p.start(vm, src(0), Gsi(26), 1),
            Err(BackendError::Os {
                op: BackendOp::StartIrq,
                errno: 16
            }),
            "a source is started once"
        );
        let moved = p.prepare_affinity(a.id, 1).unwrap();
        assert_eq!(
            moved,
            HostVector {
                cpu: 1,
                apic_id: 0x101,
                vector: 0x20
            }
        );
        assert_eq!(p.vectors_in_use(0).len(), 2, "old vector kept until commit");
        p.abort_affinity(a.id);
        assert_eq!(p.vectors_in_use(1).len(), 0);
        p.prepare_affinity(a.id, 1).unwrap();
        p.commit_affinity(a.id);
        assert_eq!(p.irq(a.id).map(|i| i.vector), Some(moved));
        assert_eq!(p.vectors_in_use(0), BTreeSet::from([0x21]));
        p.stop(a.id);
        p.stop(b.id);
        assert!(p.irqs().is_empty());
        assert_eq!(p.vectors_in_use(1), BTreeSet::new());
        p.commit_affinity(a.id);
        assert_eq!(p.invalid_calls(), 1);
    }

    #[test]
    fn table_logs_writes_and_rejects_out_of_range() {
        let j = Journal::new();
        let mut t = MockIrteTable::new(4).with_journal(j.clone());
        t.write(IrteTableId::Unit, 3, 7);
        t.write(IrteTableId::Unit, 4, 7);
        assert_eq!(t.entry(3), Some(7));
        assert_eq!(t.read(IrteTableId::Unit, 4), None);
        assert_eq!((t.writes(), t.invalid_writes()), (1, 1));
        assert_eq!(
            j.events(),
            vec![Event::IrteWrite {
                table: IrteTableId::Unit,
                index: 3,
                entry: 7
            }]
        );
    }

    #[test]
    fn table_keeps_one_table_per_device_apart() {
        let mut t = MockIrteTable::new(8);
        let (a, b) = (IrteTableId::Device(0x0100), IrteTableId::Device(0x0200));
        assert_eq!(
            t.read(a, 2),
            Some(0),
            "a device table never written reads 0"
        );
        t.write(a, 2, 5);
        t.write(b, 2, 9);
        t.write(b, 8, 1);
        assert_eq!((t.read(a, 2), t.read(b, 2)), (Some(5), Some(9)));
        assert_eq!(t.entry(2), Some(0), "the unit's table is untouched");
        assert_eq!(t.read(a, 8), None);
        assert_eq!((t.writes(), t.invalid_writes()), (2, 1));
        assert_eq!(
            t.tables().collect::<Vec<_>>(),
            vec![IrteTableId::Unit, a, b]
        );
        assert_eq!(t.table_entries(b).len(), 8);
    }

    #[test]
    fn counting_memory_logs_reads_and_writes() {
        let m = CountingMemory::new(guest_ram(0x4000));
        m.write_slice(&[1; 8], GuestAddress(0x1000)).unwrap();
        let mut b = [0u8; 4];
        m.read_slice(&mut b, GuestAddress(0x1004)).unwrap();
        assert_eq!(b, [1; 4]);
        assert_eq!(m.reads_of(0x1000, 8), 1);
        assert_eq!(m.writes_to(0x1000, 8), 1);
        assert_eq!(m.reads_of(0x1008, 8), 0);
        assert!(m.check_range(GuestAddress(0x3ff8), 8, Permissions::Read));
        assert!(!m.check_range(GuestAddress(0x3ffc), 8, Permissions::Read));
        assert_eq!(m.accesses().len(), 2, "check_range is not an access");
    }

    #[test]
    fn journal_is_bounded_and_drainable() {
        let j = Journal::with_capacity(3);
        let k = j.clone();
        for i in 0..5 {
            k.push(Event::CommitAffinity { irq: HostIrqId(i) });
        }
        let ids = |v: Vec<Event>| -> Vec<u64> {
            v.into_iter()
                .map(|e| match e {
                    Event::CommitAffinity { irq } => irq.0,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(j.capacity(), 3);
        assert_eq!(j.dropped(), 2);
        assert_eq!(ids(j.events()), [2, 3, 4]);
        assert_eq!(ids(j.drain()), [2, 3, 4]);
        assert!(j.events().is_empty());
        j.push(Event::CommitAffinity { irq: HostIrqId(9) });
        assert_eq!(ids(k.events()), [9]);
        assert_eq!(Journal::new().capacity(), Journal::DEFAULT_CAPACITY);
    }
}
