//! The `toctou` body: request buffers (and doorbell blocks) whose contents change while the host
//! reads them (VIR-MEM-H-007, VIR-DB-H-005).
//!
//! [`FlipMemory`] wraps a VM's guest memory. Before serving any read that touches a watched
//! range (the request buffer, the doorbell block) it XORs every watched range with the next
//! mask of a fuzzer-chosen schedule — another vCPU rewriting the buffer between, or right before,
//! the host's reads — and records what each watched range held at that moment. It also logs
//! every access.
//!
//! An input is a [`WorldConfig`], a prefix of up to 16 `host_calls` steps that builds state, one
//! target call (well-formed or raw, any binding) and the flip schedule. The body checks that
//!
//! * the host read the doorbell block at most once and the request buffer exactly once when the
//!   call got past the buffer checks (zero times otherwise);
//! * the host's decision equals the decision of a fresh host, built by the same prefix, that is
//!   fed memory holding exactly what the first host saw at its first read: same status, same
//!   state of both VMs and the backends, same response bytes and doorbell status.

use std::sync::{Mutex, PoisonError};

use core::fmt;

use vir_abi::call::CallCode;
use vir_abi::status::Status;
use vir_abi::wire::DoorbellBlock;
use vir_host::VmSnapshot;
use vir_host::testing::{MockState, mock_state};
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryResult, Permissions};
use zerocopy::FromBytes;

use crate::calls::{
    Buf, CallOutcome, CallsReport, HostFinding, RawCall, Tracker, Via, perform_call, prepare_call,
    ram_image, read_raw_call, read_step, read_well_formed_call, run_step,
};
use crate::input::{Encoder, Input};
use crate::world::{RAM_HIGH_START, RAM_LOW_END, World, WorldConfig};

/// Most prefix steps.
pub const MAX_PREFIX: usize = 16;
/// Masks in a flip schedule.
pub const SCHEDULE_LEN: usize = 8;

/// One logged access of a [`FlipMemory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedAccess {
    /// A read (`false`: a write).
    pub read: bool,
    /// First byte.
    pub gpa: u64,
    /// Length.
    pub len: usize,
    /// For a read touching a watched range: the contents of every watched range as served.
    pub watched: Option<Vec<Vec<u8>>>,
}

impl LoggedAccess {
    fn overlaps(&self, b: Buf) -> bool {
        overlaps(self.gpa, self.len as u64, b)
    }
}

fn overlaps(gpa: u64, len: u64, b: Buf) -> bool {
    let (s, e) = (u128::from(gpa), u128::from(gpa) + u128::from(len));
    let (bs, be) = (u128::from(b.gpa), u128::from(b.gpa) + u128::from(b.len));
    len != 0 && b.len != 0 && s < be && bs < e
}

#[derive(Debug, Default)]
struct FlipState {
    watched: Vec<Buf>,
    schedule: Vec<[u8; 8]>,
    flips: usize,
    log: Vec<LoggedAccess>,
}

/// A [`GuestMemory`] whose watched ranges change before every read that touches them.
#[derive(Debug)]
pub struct FlipMemory<M> {
    inner: M,
    state: Mutex<FlipState>,
}

impl<M: GuestMemory> FlipMemory<M> {
    /// Wrap `inner`, watching `watched` and flipping by `schedule` (mask `k` before the `k`-th
    /// watched read; an all-zero mask leaves the contents alone; past the schedule's end nothing
    /// flips).
    pub fn new(inner: M, watched: Vec<Buf>, schedule: Vec<[u8; 8]>) -> Self {
        FlipMemory {
            inner,
            state: Mutex::new(FlipState {
                watched,
                schedule,
                flips: 0,
                log: Vec::new(),
            }),
        }
    }

    /// Every access so far.
    pub fn log(&self) -> Vec<LoggedAccess> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .log
            .clone()
    }

    /// The wrapped memory (accesses through it are neither logged nor flipped).
    pub fn inner(&self) -> &M {
        &self.inner
    }

    fn read_range(&self, b: Buf) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(b.len).unwrap_or(0).min(64)];
        let _ = self.inner.read_slice(&mut out, GuestAddress(b.gpa));
        out
    }
}

impl<M: GuestMemory> GuestMemory for FlipMemory<M> {
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
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let read = access.allow(Permissions::Read);
            let touches = read
                && st
                    .watched
                    .iter()
                    .any(|&b| overlaps(addr.0, count as u64, b));
            let watched = if touches {
                let mask = st.schedule.get(st.flips).copied().unwrap_or([0; 8]);
                st.flips += 1;
                let ranges = st.watched.clone();
                for b in &ranges {
                    let mut bytes = self.read_range(*b);
                    for (i, x) in bytes.iter_mut().enumerate() {
                        *x ^= mask[i % 8];
                    }
                    let _ = self.inner.write_slice(&bytes, GuestAddress(b.gpa));
                }
                Some(ranges.iter().map(|b| self.read_range(*b)).collect())
            } else {
                None
            };
            st.log.push(LoggedAccess {
                read,
                gpa: addr.0,
                len: count,
                watched,
            });
        }
        self.inner.get_slices(addr, count, access)
    }

    // No `physical_memory()`: a host that bypassed `get_slices` would escape the flips and the
    // log, so this memory offers no such path.
}

/// What the `toctou` body found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToctouFinding {
    /// A prefix step broke a `host_calls` check.
    Prefix(HostFinding),
    /// The request buffer was read more often than allowed (VIR-MEM-H-007).
    RequestReads {
        /// The call.
        code: CallCode,
        /// The status (`None`: nothing was executed).
        status: Option<Status>,
        /// Reads touching the request buffer.
        reads: usize,
        /// Reads expected.
        expected: usize,
    },
    /// The doorbell block was read more than once (VIR-DB-H-005).
    BlockReads {
        /// Reads touching the block.
        reads: usize,
    },
    /// The host decided differently from a fresh host fed the first-read contents.
    DecisionDiffers {
        /// The call.
        code: CallCode,
        /// Status (or `None`: nothing executed) of the flipped run.
        flipped: Option<Status>,
        /// Status of the replay.
        replay: Option<Status>,
    },
    /// Same status, but the resulting state or response differs from the replay's.
    EffectDiffers {
        /// The call.
        code: CallCode,
        /// What differs: 0 = VM snapshots, 1 = backends, 2 = response, 3 = doorbell status.
        what: u8,
    },
}

impl fmt::Display for ToctouFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for ToctouFinding {}

/// What a `toctou` run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToctouReport {
    /// The target call's status, if the host executed it.
    pub status: Option<Status>,
    /// Reads that touched a watched range.
    pub watched_reads: usize,
    /// Whether any flip changed a byte the host then read.
    pub flipped: bool,
}

/// The outcome of the target call on one world.
struct Run {
    outcome: CallOutcome,
    snaps: [VmSnapshot; 2],
    mock: MockState,
    response: Vec<u8>,
    doorbell_status: Option<u32>,
}

fn finish(w: &World, outcome: CallOutcome, resp: Buf, mem: &impl GuestMemory, c: &RawCall) -> Run {
    let snap = |i: usize| {
        w.host
            .snapshot(w.vm(i))
            .unwrap_or_else(|e| panic!("toctou world VM {i} vanished: {e}"))
    };
    let mut response = vec![0u8; usize::try_from(resp.len).unwrap_or(0).min(64)];
    let _ = mem.read_slice(&mut response, GuestAddress(resp.gpa));
    let doorbell_status = (c.via == Via::Doorbell).then(|| {
        let mut b = [0u8; 4];
        let _ = mem.read_slice(&mut b, GuestAddress(c.block_gpa.wrapping_add(4)));
        u32::from_le_bytes(b)
    });
    Run {
        outcome,
        snaps: [snap(0), snap(1)],
        mock: mock_state(&w.host),
        response,
        doorbell_status,
    }
}

/// The request and response buffers the host saw: from the registers or call, or, for the
/// doorbell, from the block as first read.
fn effective_buffers(c: &RawCall, block: Option<&[u8]>) -> (Buf, Buf, u32) {
    match (
        c.via,
        block.and_then(|b| DoorbellBlock::read_from_bytes(b).ok()),
    ) {
        (Via::Doorbell, Some(b)) => (
            Buf {
                gpa: b.request_gpa.get(),
                len: u64::from(b.request_len.get()),
            },
            Buf {
                gpa: b.response_gpa.get(),
                len: u64::from(b.response_len.get()),
            },
            b.call.get(),
        ),
        _ => (c.req, c.resp, c.code as u32),
    }
}

fn build_world(config: WorldConfig, prefix: &[crate::calls::Step]) -> Result<World, HostFinding> {
    let mut w = World::new(config);
    let mut t = Tracker::default();
    let mut r = CallsReport::default();
    for s in prefix {
        run_step(&mut w, &mut t, s, &mut r)?;
    }
    Ok(w)
}

/// The `toctou` body.
pub fn toctou(data: &[u8]) -> Result<ToctouReport, ToctouFinding> {
    let mut input = Input::new(data);
    let config = WorldConfig::read(&mut input);
    let n = input.below(MAX_PREFIX + 1);
    // Build the prefix's steps against a world, keeping the steps for the replay.
    let mut w = World::new(config);
    let mut t = Tracker::default();
    let mut r = CallsReport::default();
    let mut prefix = Vec::new();
    for _ in 0..n {
        let step = read_step(&w, &t.handles, &mut input);
        run_step(&mut w, &mut t, &step, &mut r).map_err(ToctouFinding::Prefix)?;
        prefix.push(step);
    }
    let sel = input.u8();
    let vm = usize::from(sel >> 7);
    let call = if sel & 1 == 0 {
        read_well_formed_call(&w, &t.handles, &mut input, vm)
    } else {
        read_raw_call(&mut input, vm)
    };
    let schedule: Vec<[u8; 8]> = (0..SCHEDULE_LEN).map(|_| input.array::<8>()).collect();
    run_target(w, config, &prefix, &call, schedule)
}

fn run_target(
    mut w: World,
    config: WorldConfig,
    prefix: &[crate::calls::Step],
    call: &RawCall,
    schedule: Vec<[u8; 8]>,
) -> Result<ToctouReport, ToctouFinding> {
    let code = call.call_code();
    let mem = w.mems[call.vm % 2].clone();
    prepare_call(call, &mem);
    let block = Buf {
        gpa: call.block_gpa,
        len: core::mem::size_of::<DoorbellBlock>() as u64,
    };
    let req_watch = Buf {
        gpa: call.req.gpa,
        len: call.req.len.min(64),
    };
    let mut watched = vec![req_watch];
    if call.via == Via::Doorbell {
        watched.push(block);
    }
    let pre_image = ram_image(&mem);
    let flip = FlipMemory::new(mem.clone(), watched, schedule);
    // The state of guest RAM just before the first watched read is what the replay starts from;
    // the watched ranges then get what the host saw at their first read.
    let outcome = perform_call(&mut w, call, &flip).map_err(ToctouFinding::Prefix)?;
    let log = flip.log();
    let first_watched = log.iter().find_map(|a| a.watched.clone());
    let first_block = if call.via == Via::Doorbell {
        log.iter()
            .find(|a| a.read && a.overlaps(block))
            .and_then(|a| a.watched.as_ref())
            .and_then(|v| v.get(1).cloned())
    } else {
        None
    };
    let (req, resp, call_field) = effective_buffers(call, first_block.as_deref());
    let status = match outcome {
        CallOutcome::Executed(s) => Some(s),
        CallOutcome::NotExecuted => None,
    };

    // Read counts.
    let block_reads = log.iter().filter(|a| a.read && a.overlaps(block)).count();
    if call.via == Via::Doorbell && block_reads > 1 {
        return Err(ToctouFinding::BlockReads { reads: block_reads });
    }
    let req_reads = log
        .iter()
        .filter(|a| a.read && a.overlaps(req) && !(call.via == Via::Doorbell && a.overlaps(block)))
        .count();
    let rejected_early = matches!(
        status,
        None | Some(Status::UNKNOWN_CALL) | Some(Status::BAD_LENGTH) | Some(Status::BAD_BUFFER)
    ) || (call.via == Via::Doorbell
        && status == Some(Status::INVALID_PARAMETER)
        && call_field >> 16 != 0);
    let expected = usize::from(!rejected_early && req.len != 0);
    if req_reads != expected {
        return Err(ToctouFinding::RequestReads {
            code,
            status,
            reads: req_reads,
            expected,
        });
    }
    let flipped_run = finish(&w, outcome, resp, &mem, call);

    // The replay: same prefix, memory holding what the first host saw.
    let mut fresh = build_world(config, prefix).map_err(ToctouFinding::Prefix)?;
    let rmem = fresh.mems[call.vm % 2].clone();
    let _ = rmem.write_slice(&pre_image[..RAM_LOW_END as usize], GuestAddress(0));
    let _ = rmem.write_slice(
        &pre_image[RAM_LOW_END as usize..],
        GuestAddress(RAM_HIGH_START),
    );
    restore_first_reads(&rmem, &log, call, block, req_watch);
    let replay_outcome = perform_call(&mut fresh, call, &rmem).map_err(ToctouFinding::Prefix)?;
    let replay = finish(&fresh, replay_outcome, resp, &rmem, call);
    let replay_status = match replay.outcome {
        CallOutcome::Executed(s) => Some(s),
        CallOutcome::NotExecuted => None,
    };
    if replay_status != status {
        return Err(ToctouFinding::DecisionDiffers {
            code,
            flipped: status,
            replay: replay_status,
        });
    }
    let differs = |what| Err(ToctouFinding::EffectDiffers { code, what });
    if replay.snaps != flipped_run.snaps {
        return differs(0);
    }
    if replay.mock != flipped_run.mock {
        return differs(1);
    }
    if status == Some(Status::SUCCESS) && replay.response != flipped_run.response {
        return differs(2);
    }
    if replay.doorbell_status != flipped_run.doorbell_status {
        return differs(3);
    }
    Ok(ToctouReport {
        status,
        watched_reads: log.iter().filter(|a| a.watched.is_some()).count(),
        flipped: first_watched.is_some(),
    })
}

/// Give the watched ranges of the replay memory (which holds the pre-call image) what the
/// flipped host saw at their first read.
fn restore_first_reads<M: GuestMemory + ?Sized>(
    rmem: &M,
    log: &[LoggedAccess],
    call: &RawCall,
    block: Buf,
    req_watch: Buf,
) {
    let mut ranges = vec![req_watch];
    if call.via == Via::Doorbell {
        ranges.push(block);
    }
    for (i, b) in ranges.iter().enumerate() {
        // Contents at the first read that touched this range, or at the first watched read when
        // none did (the flips apply to all watched ranges at once).
        let served = log
            .iter()
            .find(|a| a.read && a.overlaps(*b) && a.watched.is_some())
            .or_else(|| log.iter().find(|a| a.watched.is_some()))
            .and_then(|a| a.watched.as_ref())
            .and_then(|v| v.get(i));
        if let Some(bytes) = served {
            let _ = rmem.write_slice(bytes, GuestAddress(b.gpa));
        }
    }
}

/// Builders for seed inputs.
pub mod seed {
    use super::*;

    /// The schedule part of an input: `masks` (up to [`SCHEDULE_LEN`]), zero-padded.
    pub fn schedule(enc: &mut Encoder, masks: &[[u8; 8]]) {
        for i in 0..SCHEDULE_LEN {
            enc.bytes(&masks.get(i).copied().unwrap_or([0; 8]));
        }
    }

    /// Header: configuration and prefix length.
    pub fn header(enc: &mut Encoder, config: WorldConfig, prefix_steps: u8) {
        config.write(enc);
        enc.u8(prefix_steps);
    }

    /// Selector of the target call: well-formed (`raw = false`) or raw, from VM `vm`.
    pub fn target(enc: &mut Encoder, vm: usize, raw: bool) {
        enc.u8(((vm as u8) & 1) << 7 | u8::from(raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::seed as cs;

    fn run(build: impl FnOnce(&mut Encoder)) -> Result<ToctouReport, ToctouFinding> {
        let mut enc = Encoder::new();
        build(&mut enc);
        toctou(&enc.finish())
    }

    #[test]
    fn flipped_allocate_is_decided_on_the_first_read() {
        // VIR-MEM-H-007: the host reads ALLOCATE's request once, so the flips after that read
        // cannot matter, and the one before it is simply what the host saw.
        let r = run(|e| {
            seed::header(e, WorldConfig::default(), 1);
            cs::negotiate(e, 0, Via::Memory);
            seed::target(e, 0, false);
            // ALLOCATE MSI-X index 3 through the memory binding.
            e.u8(cs::code_index(CallCode::ALLOCATE))
                .u8(0)
                .u8(1)
                .u8(3)
                .u8(0xff)
                .u8(0);
            seed::schedule(e, &[[0, 0, 0, 0, 0, 0, 0, 0], [0xff; 8], [0x55; 8]]);
        })
        .unwrap();
        assert_eq!(r.status, Some(Status::SUCCESS));
        assert_eq!(r.watched_reads, 1);
    }

    #[test]
    fn a_flip_before_the_read_changes_the_decision_consistently() {
        // The mask turns kind 2 (MSI-X) into kind 0xfd before the single read: INVALID_PARAMETER
        // (VIR-ALC-H-001) in both the flipped run and the replay.
        let r = run(|e| {
            seed::header(e, WorldConfig::default(), 1);
            cs::negotiate(e, 0, Via::Memory);
            seed::target(e, 0, false);
            e.u8(cs::code_index(CallCode::ALLOCATE))
                .u8(0)
                .u8(1)
                .u8(3)
                .u8(0xff)
                .u8(0);
            seed::schedule(e, &[[0, 0, 0, 0, 0xff, 0, 0, 0]]);
        })
        .unwrap();
        assert_eq!(r.status, Some(Status::INVALID_PARAMETER));
    }

    #[test]
    fn doorbell_block_and_request_are_each_read_once() {
        // VIR-DB-H-005, VIR-MEM-H-007: the block is read first (no flip), then the request,
        // after a flip of 0x01 in every byte that sets reserved bits: INVALID_PARAMETER, and
        // the replay on those bytes agrees.
        let r = run(|e| {
            seed::header(e, WorldConfig::default(), 0);
            seed::target(e, 1, false);
            // NEGOTIATE through the doorbell.
            e.u8(cs::code_index(CallCode::NEGOTIATE))
                .u8(3)
                .u8(0)
                .u8(0xff)
                .u8(0);
            seed::schedule(e, &[[0; 8], [0x01; 8], [0x80; 8]]);
        })
        .unwrap();
        assert_eq!(r.status, Some(Status::INVALID_PARAMETER));
        assert_eq!(r.watched_reads, 2, "the block, then the request");
    }

    #[test]
    fn flip_memory_logs_and_flips_watched_reads_only() {
        let mem = crate::world::guest_memory();
        mem.write_slice(&[1u8; 16], GuestAddress(0x1000)).unwrap();
        let f = FlipMemory::new(
            mem,
            vec![Buf {
                gpa: 0x1000,
                len: 16,
            }],
            vec![[0x10; 8], [0x01; 8]],
        );
        let mut b = [0u8; 16];
        f.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [0x11; 16]);
        f.read_slice(&mut b[..8], GuestAddress(0x1008)).unwrap();
        assert_eq!(&b[..8], &[0x10; 8]);
        f.read_slice(&mut b[..8], GuestAddress(0x2000)).unwrap();
        let log = f.log();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].watched, Some(vec![vec![0x11; 16]]));
        assert_eq!(log[2].watched, None, "unwatched read");
    }
}
