//! An AMD-Vi IOMMU, interrupt remapping only.
//!
//! Under AMD-Vi every device has its own interrupt remapping table, named by the interrupt
//! fields of its device table entry ([`DteInterrupt`]: IV, IntCtl, IntTabLen and the
//! pass-through bits). The IOMMU holds all entries of one width, chosen by its GA mode
//! ([`IrteWidth`]): the legacy 32-bit entry or the 128-bit entry, which is either remapped
//! (GuestMode = 0) or guest virtual APIC (GuestMode = 1, AMD's posting). Entries are stored raw
//! and decoded with [`vir_abi::hw::amd`] on every use.
//!
//! * **Entry cache**: the model caches every entry, the strictest legal cache: a table write
//!   takes effect only after `INVALIDATE_INTERRUPT_TABLE` for the device
//!   ([`AmdIommu::invalidate_interrupt_table`]) or `INVALIDATE_IOMMU_ALL`
//!   ([`AmdIommu::invalidate_all`]). A changed device table entry takes effect at once (the
//!   model does not cache DTEs).
//! * **Event log** ([`AmdEvent`]): the codes are those of the AMD IOMMU specification (Linux
//!   `EVENT_TYPE_*`): `ILLEGAL_DEV_TABLE_ENTRY` (0x1), `IO_PAGE_FAULT` (0x2, with the I flag
//!   for interrupt requests). The log keeps [`EVENT_LOG_CAPACITY`] records, then counts
//!   overflows.
//! * **GA log**: a guest-mode entry whose vCPU is not running (IsRun = 0) sets the vector in
//!   the vAPIC backing page's IRR and, with GALogIntr = 1, appends the entry's GA tag to the GA
//!   log so the host can wake the vCPU ([`AmdIommu::take_ga_log`]). With IsRun = 1 the IOMMU
//!   rings the doorbell of the destination CPU instead ([`GuestDelivery::doorbell`]).
//!
//! # Check order of an interrupt write (fixed or arbitrated MSI)
//!
//! [`AmdIommu::remap`] takes (requester id, address, data):
//!
//! 1. high address ≠ 0 or address 31:20 ≠ `0xFEE`: not an interrupt (a DMA write, which DMA
//!    remapping handles and this model does not): blocked, [`AmdOutcome::NotInterrupt`], no
//!    event;
//! 2. no device table entry, or IV = 0: passed through untranslated;
//! 3. IntCtl = 11b (reserved) or IntTabLen > 1011b (reserved): `ILLEGAL_DEV_TABLE_ENTRY`,
//!    target abort;
//! 4. IntCtl = 00b: target abort (interrupts of the device are blocked), no event; IntCtl =
//!    01b: forwarded unmapped (passed through);
//! 5. IntCtl = 10b (remapped): the index is data 10:0; an index ≥ 2^IntTabLen:
//!    `IO_PAGE_FAULT` (I = 1), target abort;
//! 6. the cached entry: RemapEn = 0: `IO_PAGE_FAULT` (I = 1) unless SupIOPF = 1, target abort;
//! 7. reserved bits set, GuestMode = 1 in a 32-bit entry, or an IntType other than fixed or
//!    arbitrated: `IO_PAGE_FAULT` (I = 1, RZ = 1) unless SupIOPF = 1, target abort;
//! 8. remapped entry: deliver the entry's vector to its destination; guest mode: post the
//!    entry's vector into the vAPIC backing page (see GA log above).
//!
//! Data bits 31:11 are ignored by the lookup (the host returns them zero, VIR-FMT-H-005).

use core::fmt;
use std::collections::{BTreeMap, VecDeque};

use vir_abi::hw::amd::{AmdIrte32Entry, AmdIrte128, AmdMsi, INT_TYPE_ARBITRATED, INT_TYPE_FIXED};
use vir_abi::hw::{MSI_ADDRESS_BASE, MsiMessage};

use crate::ids::{HostApicId, RequesterId};

/// How many event log records the IOMMU keeps before it counts overflows instead.
pub const EVENT_LOG_CAPACITY: usize = 4096;

/// How many GA log records the IOMMU keeps before it counts overflows instead.
pub const GA_LOG_CAPACITY: usize = 4096;

/// The largest IntTabLen (2048 entries).
pub const MAX_INT_TAB_LEN: u8 = 11;

/// Event log code `ILLEGAL_DEV_TABLE_ENTRY`.
pub const EVENT_ILLEGAL_DEV_TABLE_ENTRY: u8 = 0x1;
/// Event log code `IO_PAGE_FAULT`.
pub const EVENT_IO_PAGE_FAULT: u8 = 0x2;
/// Event log code `INVALID_DEVICE_REQUEST` (not raised by interrupt remapping in this model; a
/// device's DMA requests are not modelled).
pub const EVENT_INVALID_DEVICE_REQUEST: u8 = 0x8;

/// Width of the IOMMU's interrupt remapping table entries (Control register GAEn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrteWidth {
    /// GAEn = 0: 32-bit entries.
    Bits32,
    /// GAEn = 1: 128-bit entries, remapped or guest virtual APIC mode.
    Bits128,
}

/// DTE IntCtl (bits 189:188).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntCtl {
    /// 00b: fixed and arbitrated interrupts are target aborted.
    Abort,
    /// 01b: forwarded unmapped.
    Forward,
    /// 10b: remapped through the device's table.
    Remap,
    /// 11b: reserved (an illegal device table entry).
    Reserved,
}

impl IntCtl {
    /// From the two DTE bits.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::Abort,
            1 => Self::Forward,
            2 => Self::Remap,
            _ => Self::Reserved,
        }
    }
}

/// The interrupt fields of a device table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DteInterrupt {
    /// IV: the interrupt fields are valid (0: interrupts pass through untranslated).
    pub iv: bool,
    /// IntCtl.
    pub int_ctl: IntCtl,
    /// IntTabLen: the table has 2^IntTabLen entries (0–11; larger values are reserved).
    pub int_tab_len: u8,
    /// INIT pass-through.
    pub init_pass: bool,
    /// ExtInt pass-through.
    pub eint_pass: bool,
    /// NMI pass-through.
    pub nmi_pass: bool,
    /// LINT0 pass-through.
    pub lint0_pass: bool,
    /// LINT1 pass-through.
    pub lint1_pass: bool,
}

impl DteInterrupt {
    /// What a vIR host programs (VIR-DISC-H-001): IV = 1, IntCtl = remapped, a table of
    /// 2^`int_tab_len` entries, every pass-through bit clear.
    pub const fn remapped(int_tab_len: u8) -> Self {
        Self {
            iv: true,
            int_ctl: IntCtl::Remap,
            int_tab_len,
            init_pass: false,
            eint_pass: false,
            nmi_pass: false,
            lint0_pass: false,
            lint1_pass: false,
        }
    }

    /// Whether the entry blocks compatibility-format (unremapped) interrupts of the device as
    /// VIR-DISC-H-001 requires.
    pub const fn blocks_unremapped(&self) -> bool {
        self.iv
            && matches!(self.int_ctl, IntCtl::Remap)
            && !(self.init_pass
                || self.eint_pass
                || self.nmi_pass
                || self.lint0_pass
                || self.lint1_pass)
    }

    /// Entries in the table, `None` for a reserved IntTabLen.
    pub const fn entries(&self) -> Option<u32> {
        if self.int_tab_len > MAX_INT_TAB_LEN {
            None
        } else {
            Some(1 << self.int_tab_len)
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AmdEvent {
    /// Event code ([`EVENT_IO_PAGE_FAULT`], [`EVENT_ILLEGAL_DEV_TABLE_ENTRY`]).
    pub code: u8,
    /// The requester (device id).
    pub device_id: RequesterId,
    /// The table index, when computed.
    pub index: Option<u16>,
    /// I flag: the request was an interrupt.
    pub interrupt: bool,
    /// RZ flag: a reserved bit was set in the entry.
    pub reserved_bit: bool,
    /// The address written.
    pub address: u64,
    /// The data written.
    pub data: u32,
}

/// A write the IOMMU target aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AmdAbort {
    /// The event code, `None` when the abort logs nothing (IntCtl = 00b).
    pub code: Option<u8>,
    /// The table index, if computed.
    pub index: Option<u16>,
    /// Whether an event was logged (`false` when SupIOPF = 1 suppressed it or none applies).
    pub logged: bool,
}

/// A write remapped through a remapped entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AmdRemapped {
    /// Table index used.
    pub index: u16,
    /// Destination APIC id.
    pub dest: HostApicId,
    /// Host vector.
    pub vector: u8,
    /// Arbitrated (lowest priority) rather than fixed.
    pub arbitrated: bool,
    /// Logical destination mode.
    pub dest_mode_logical: bool,
}

/// A write posted through a guest virtual APIC mode entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestDelivery {
    /// Table index used.
    pub index: u16,
    /// vAPIC backing page address.
    pub backing_page: u64,
    /// Guest vector set in the backing page's IRR.
    pub vector: u8,
    /// GA tag of the entry.
    pub ga_tag: u32,
    /// With IsRun = 1: the CPU whose AVIC doorbell was rung. `None` when the vCPU is not
    /// running (the GA log is used instead).
    pub doorbell: Option<HostApicId>,
    /// Whether a GA log record was appended.
    pub ga_logged: bool,
}

/// The result of one interrupt write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdOutcome {
    /// Remapped entry: deliver to a physical CPU.
    Remapped(AmdRemapped),
    /// Guest mode entry: posted into a vAPIC backing page.
    Guest(GuestDelivery),
    /// Passed through untranslated (IV = 0, or IntCtl = forward).
    PassThrough(MsiMessage),
    /// Target aborted.
    Abort(AmdAbort),
    /// Not an interrupt write (outside the interrupt window).
    NotInterrupt,
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AmdStats {
    /// Table entry writes.
    pub irte_writes: u64,
    /// `INVALIDATE_INTERRUPT_TABLE` / `INVALIDATE_IOMMU_ALL` commands.
    pub invalidations: u64,
    /// Writes remapped to a physical CPU.
    pub remapped: u64,
    /// Writes posted in guest mode.
    pub guest_posted: u64,
    /// Writes passed through.
    pub passed_through: u64,
    /// Writes aborted.
    pub aborted: u64,
    /// Events logged.
    pub events_logged: u64,
    /// Events suppressed by SupIOPF.
    pub events_suppressed: u64,
}

/// Errors of the programming interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdIommuError {
    /// The device has no interrupt table (no device table entry set).
    NoTable(RequesterId),
    /// The index is beyond the device's table.
    IndexOutOfRange {
        /// The device.
        device: RequesterId,
        /// The index.
        index: u32,
        /// Entries in its table.
        entries: u32,
    },
    /// A 32-bit IOMMU was given an entry with bits above 31.
    EntryTooWide(u128),
    /// A reserved IntTabLen.
    IntTabLen(u8),
}

impl fmt::Display for AmdIommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoTable(d) => write!(f, "device {d} has no interrupt remapping table"),
            Self::IndexOutOfRange {
                device,
                index,
                entries,
            } => write!(
                f,
                "index {index} is beyond the {entries}-entry table of device {device}"
            ),
            Self::EntryTooWide(e) => write!(f, "entry {e:#x} does not fit 32 bits"),
            Self::IntTabLen(l) => write!(f, "IntTabLen {l} is reserved"),
        }
    }
}

impl std::error::Error for AmdIommuError {}

#[derive(Debug, Clone)]
struct DeviceTable {
    dte: DteInterrupt,
    /// As software wrote it.
    memory: Vec<u128>,
    /// What the IOMMU uses.
    cache: Vec<u128>,
}

/// A vAPIC backing page, as much of it as interrupt posting touches: the IRR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VapicPage {
    irr: [u64; 4],
}

impl VapicPage {
    /// Whether `vector` is pending in the IRR.
    pub fn pending(&self, vector: u8) -> bool {
        let (word, bit) = (usize::from(vector / 64), vector % 64);
        self.irr.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Take every pending vector, lowest first (the vCPU accepting its IRR).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let v: Vec<u8> = (0..=255u8).filter(|&v| self.pending(v)).collect();
        self.irr = [0; 4];
        v
    }

    fn set(&mut self, vector: u8) {
        let (word, bit) = (usize::from(vector / 64), vector % 64);
        if let Some(w) = self.irr.get_mut(word) {
            *w |= 1 << bit;
        }
    }
}

/// An AMD-Vi IOMMU (interrupt remapping).
#[derive(Debug, Clone)]
pub struct AmdIommu {
    width: IrteWidth,
    tables: BTreeMap<RequesterId, DeviceTable>,
    pages: BTreeMap<u64, VapicPage>,
    events: VecDeque<AmdEvent>,
    event_overflows: u64,
    ga_log: VecDeque<u32>,
    ga_overflows: u64,
    stats: AmdStats,
}

impl AmdIommu {
    /// An IOMMU with entries of `width` and no device table entries.
    pub fn new(width: IrteWidth) -> Self {
        Self {
            width,
            tables: BTreeMap::new(),
            pages: BTreeMap::new(),
            events: VecDeque::new(),
            event_overflows: 0,
            ga_log: VecDeque::new(),
            ga_overflows: 0,
            stats: AmdStats::default(),
        }
    }

    /// The entry width.
    pub const fn width(&self) -> IrteWidth {
        self.width
    }

    /// Set the interrupt fields of `device`'s table entry, giving it a zeroed table of
    /// 2^IntTabLen entries. A table that already exists keeps its entries (truncated or
    /// extended with zeros to the new length), as a host reprogramming a DTE would find them.
    pub fn set_dte(&mut self, device: RequesterId, dte: DteInterrupt) -> Result<(), AmdIommuError> {
        let n = dte
            .entries()
            .ok_or(AmdIommuError::IntTabLen(dte.int_tab_len))? as usize;
        let t = self.tables.entry(device).or_insert_with(|| DeviceTable {
            dte,
            memory: Vec::new(),
            cache: Vec::new(),
        });
        t.dte = dte;
        t.memory.resize(n, 0);
        t.cache.resize(n, 0);
        Ok(())
    }

    /// Set the DTE's raw interrupt fields, reserved values included (for tests of the
    /// illegal-entry path): the table keeps its length.
    pub fn set_dte_raw(&mut self, device: RequesterId, int_ctl_bits: u8, int_tab_len: u8) {
        if let Some(t) = self.tables.get_mut(&device) {
            t.dte.int_ctl = IntCtl::from_bits(int_ctl_bits);
            t.dte.int_tab_len = int_tab_len;
        }
    }

    /// The interrupt fields of `device`'s table entry.
    pub fn dte(&self, device: RequesterId) -> Option<DteInterrupt> {
        self.tables.get(&device).map(|t| t.dte)
    }

    /// Entries in `device`'s table (0 without a table).
    pub fn entries(&self, device: RequesterId) -> u32 {
        self.tables
            .get(&device)
            .map_or(0, |t| t.memory.len() as u32)
    }

    fn slot(&self, device: RequesterId, index: u32) -> Result<usize, AmdIommuError> {
        let t = self
            .tables
            .get(&device)
            .ok_or(AmdIommuError::NoTable(device))?;
        let entries = t.memory.len() as u32;
        if index >= entries {
            return Err(AmdIommuError::IndexOutOfRange {
                device,
                index,
                entries,
            });
        }
        Ok(index as usize)
    }

    /// Write entry `index` of `device`'s table (memory only; see the entry cache). A 32-bit
    /// IOMMU takes the entry in the low 32 bits.
    pub fn write_irte(
        &mut self,
        device: RequesterId,
        index: u32,
        raw: u128,
    ) -> Result<(), AmdIommuError> {
        if self.width == IrteWidth::Bits32 && raw >> 32 != 0 {
            return Err(AmdIommuError::EntryTooWide(raw));
        }
        let i = self.slot(device, index)?;
        if let Some(e) = self
            .tables
            .get_mut(&device)
            .and_then(|t| t.memory.get_mut(i))
        {
            *e = raw;
            self.stats.irte_writes += 1;
        }
        Ok(())
    }

    /// Entry `index` of `device`'s table as written.
    pub fn irte(&self, device: RequesterId, index: u32) -> Result<u128, AmdIommuError> {
        let i = self.slot(device, index)?;
        Ok(self
            .tables
            .get(&device)
            .and_then(|t| t.memory.get(i))
            .copied()
            .unwrap_or(0))
    }

    /// Entry `index` of `device`'s table as the IOMMU uses it.
    pub fn cached_irte(&self, device: RequesterId, index: u32) -> Result<u128, AmdIommuError> {
        let i = self.slot(device, index)?;
        Ok(self
            .tables
            .get(&device)
            .and_then(|t| t.cache.get(i))
            .copied()
            .unwrap_or(0))
    }

    /// `INVALIDATE_INTERRUPT_TABLE` for `device` (followed by `COMPLETION_WAIT`: done when this
    /// returns). A device without a table is a no-op, as on hardware.
    pub fn invalidate_interrupt_table(&mut self, device: RequesterId) {
        self.stats.invalidations += 1;
        if let Some(t) = self.tables.get_mut(&device) {
            t.cache.clone_from(&t.memory);
        }
    }

    /// `INVALIDATE_IOMMU_ALL`.
    pub fn invalidate_all(&mut self) {
        self.stats.invalidations += 1;
        for t in self.tables.values_mut() {
            t.cache.clone_from(&t.memory);
        }
    }

    /// The vAPIC backing page at `address` (an empty one if nothing was ever posted there).
    pub fn vapic_page(&self, address: u64) -> VapicPage {
        self.pages.get(&address).cloned().unwrap_or_default()
    }

    /// The vAPIC backing page at `address`, mutably (the vCPU accepting its IRR).
    pub fn vapic_page_mut(&mut self, address: u64) -> &mut VapicPage {
        self.pages.entry(address).or_default()
    }

    /// The event log.
    pub fn events(&self) -> impl Iterator<Item = &AmdEvent> {
        self.events.iter()
    }

    /// Drain the event log.
    pub fn take_events(&mut self) -> Vec<AmdEvent> {
        self.events.drain(..).collect()
    }

    /// Events lost to a full log.
    pub const fn event_overflows(&self) -> u64 {
        self.event_overflows
    }

    /// Drain the GA log (GA tags of guest-mode interrupts for vCPUs not running).
    pub fn take_ga_log(&mut self) -> Vec<u32> {
        self.ga_log.drain(..).collect()
    }

    /// GA log records lost to a full log.
    pub const fn ga_log_overflows(&self) -> u64 {
        self.ga_overflows
    }

    /// Counters.
    pub const fn stats(&self) -> AmdStats {
        self.stats
    }

    fn abort(
        &mut self,
        code: Option<u8>,
        index: Option<u16>,
        suppress: bool,
        reserved_bit: bool,
        device_id: RequesterId,
        msg: MsiMessage,
    ) -> AmdOutcome {
        self.stats.aborted += 1;
        let logged = match code {
            Some(code) if !suppress => {
                self.stats.events_logged += 1;
                if self.events.len() < EVENT_LOG_CAPACITY {
                    self.events.push_back(AmdEvent {
                        code,
                        device_id,
                        index,
                        interrupt: true,
                        reserved_bit,
                        address: msg.address(),
                        data: msg.data,
                    });
                } else {
                    self.event_overflows += 1;
                }
                true
            }
            Some(_) => {
                self.stats.events_suppressed += 1;
                false
            }
            None => false,
        };
        AmdOutcome::Abort(AmdAbort {
            code,
            index,
            logged,
        })
    }

    /// Processes one interrupt write from `device`, in the order of the module documentation.
    /// Total: any input gives an outcome, nothing panics.
    pub fn remap(&mut self, device: RequesterId, msg: MsiMessage) -> AmdOutcome {
        // 1. The interrupt window.
        if msg.address_hi != 0 || msg.address_lo & 0xFFF0_0000 != MSI_ADDRESS_BASE {
            return AmdOutcome::NotInterrupt;
        }
        // 2. IV.
        let Some(t) = self.tables.get(&device) else {
            self.stats.passed_through += 1;
            return AmdOutcome::PassThrough(msg);
        };
        let dte = t.dte;
        if !dte.iv {
            self.stats.passed_through += 1;
            return AmdOutcome::PassThrough(msg);
        }
        // 3-4. IntCtl and IntTabLen.
        let entries = match (dte.int_ctl, dte.entries()) {
            (IntCtl::Reserved, _) | (_, None) => {
                let code = Some(EVENT_ILLEGAL_DEV_TABLE_ENTRY);
                return self.abort(code, None, false, false, device, msg);
            }
            (IntCtl::Abort, _) => return self.abort(None, None, false, false, device, msg),
            (IntCtl::Forward, _) => {
                self.stats.passed_through += 1;
                return AmdOutcome::PassThrough(msg);
            }
            (IntCtl::Remap, Some(n)) => n,
        };
        // 5. The index.
        let index = (msg.data & AmdMsi::DATA_INDEX_MASK) as u16;
        let cached = if u32::from(index) < entries {
            t.cache.get(usize::from(index)).copied()
        } else {
            None
        };
        let Some(raw) = cached else {
            let code = Some(EVENT_IO_PAGE_FAULT);
            return self.abort(code, Some(index), false, false, device, msg);
        };
        // 6-7. The entry.
        let fault = Some(EVENT_IO_PAGE_FAULT);
        match self.width {
            IrteWidth::Bits32 => {
                let bits = raw as u32;
                let sup_iopf = bits & 2 != 0;
                if bits & 1 == 0 {
                    return self.abort(fault, Some(index), sup_iopf, false, device, msg);
                }
                let e = match AmdIrte32Entry::decode(bits) {
                    Ok(e) if e.int_type <= INT_TYPE_ARBITRATED => e,
                    _ => return self.abort(fault, Some(index), sup_iopf, true, device, msg),
                };
                self.stats.remapped += 1;
                AmdOutcome::Remapped(AmdRemapped {
                    index,
                    dest: HostApicId(u32::from(e.destination)),
                    vector: e.vector,
                    arbitrated: e.int_type == INT_TYPE_ARBITRATED,
                    dest_mode_logical: e.dest_mode_logical,
                })
            }
            IrteWidth::Bits128 => {
                let sup_iopf = raw & 2 != 0;
                if raw & 1 == 0 {
                    return self.abort(fault, Some(index), sup_iopf, false, device, msg);
                }
                match AmdIrte128::decode(raw) {
                    Ok(AmdIrte128::Remapped(e))
                        if e.int_type == INT_TYPE_FIXED || e.int_type == INT_TYPE_ARBITRATED =>
                    {
                        self.stats.remapped += 1;
                        AmdOutcome::Remapped(AmdRemapped {
                            index,
                            dest: HostApicId(e.destination),
                            vector: e.vector,
                            arbitrated: e.int_type == INT_TYPE_ARBITRATED,
                            dest_mode_logical: e.dest_mode_logical,
                        })
                    }
                    Ok(AmdIrte128::Guest(g)) => {
                        self.stats.guest_posted += 1;
                        self.pages.entry(g.backing_page).or_default().set(g.vector);
                        let (doorbell, ga_logged) = if g.is_run {
                            (Some(HostApicId(g.destination)), false)
                        } else if g.ga_log_intr {
                            if self.ga_log.len() < GA_LOG_CAPACITY {
                                self.ga_log.push_back(g.ga_tag);
                            } else {
                                self.ga_overflows += 1;
                            }
                            (None, true)
                        } else {
                            (None, false)
                        };
                        AmdOutcome::Guest(GuestDelivery {
                            index,
                            backing_page: g.backing_page,
                            vector: g.vector,
                            ga_tag: g.ga_tag,
                            doorbell,
                            ga_logged,
                        })
                    }
                    Ok(AmdIrte128::Remapped(_)) | Err(_) => {
                        self.abort(fault, Some(index), sup_iopf, true, device, msg)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
