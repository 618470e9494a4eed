//! The memory binding: request and response buffers in guest memory (VIR-MEM-H-001..008).
//!
//! Every binding funnels into these rules. The request is copied once into a host-private
//! buffer before anything is decoded; the response is written once, after the call's state
//! change is complete; a failing call never touches the response buffer.

use vir_abi::call::{BUFFER_ALIGN, MAX_BUFFER_LEN, PAGE_SIZE};
use vir_abi::status::Status;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::config::GuestWritable;

/// A guest buffer: GPA and length as passed by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestBuffer {
    pub gpa: u64,
    pub len: u64,
}

impl GuestBuffer {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The half-open byte range, in 128-bit arithmetic (a buffer may end exactly at 2^64).
    fn range(&self) -> (u128, u128) {
        (
            u128::from(self.gpa),
            u128::from(self.gpa) + u128::from(self.len),
        )
    }

    fn overlaps(&self, other_start: u128, other_end: u128) -> bool {
        let (s, e) = self.range();
        !self.is_empty() && s < other_end && other_start < e
    }
}

/// The private copy of a request (at most [`MAX_BUFFER_LEN`] bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestCopy {
    buf: [u8; MAX_BUFFER_LEN as usize],
    len: usize,
}

impl RequestCopy {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Step 3 of VIR-CALL-H-001: the buffer rules, in the specification's order; `exclude` is a further guest
/// range neither buffer may overlap (the doorbell block). Lengths were checked (step 2), so both
/// are at most [`MAX_BUFFER_LEN`]. The response must lie in `writable`, the VMM's own account of
/// guest-writable memory: checked here, before the call changes anything, so that a response
/// that cannot be written never follows a committed change (VIR-CALL-H-006).
pub(crate) fn check_buffers<M: GuestMemory + ?Sized>(
    mem: &M,
    req: GuestBuffer,
    resp: GuestBuffer,
    exclude: Option<GuestBuffer>,
    writable: &GuestWritable,
) -> Result<(), Status> {
    let both = [req, resp];
    // VIR-MEM-H-002: a zero-length buffer must have GPA 0.
    if both.iter().any(|b| b.is_empty() && b.gpa != 0) {
        return Err(Status::BAD_BUFFER);
    }
    let present = || both.iter().filter(|b| !b.is_empty());
    // VIR-MEM-H-003: 8-byte aligned.
    if present().any(|b| !b.gpa.is_multiple_of(BUFFER_ALIGN)) {
        return Err(Status::BAD_BUFFER);
    }
    // VIR-MEM-H-004: within one 4 KiB page.
    if present().any(|b| b.gpa % PAGE_SIZE + b.len > PAGE_SIZE) {
        return Err(Status::BAD_BUFFER);
    }
    // VIR-MEM-H-005: request and response do not overlap (nor the doorbell block).
    let (rs, re) = resp.range();
    if req.overlaps(rs, re) {
        return Err(Status::BAD_BUFFER);
    }
    if let Some(x) = exclude {
        let (xs, xe) = x.range();
        if present().any(|b| b.overlaps(xs, xe)) {
            return Err(Status::BAD_BUFFER);
        }
    }
    // VIR-MEM-H-006: backed by guest RAM (readable request, writable response).
    for (b, access) in [(req, Permissions::Read), (resp, Permissions::Write)] {
        if !b.is_empty() && !mem.check_range(GuestAddress(b.gpa), b.len as usize, access) {
            return Err(Status::BAD_BUFFER);
        }
    }
    if !resp.is_empty() && !writable.contains(resp.gpa, resp.len) {
        return Err(Status::BAD_BUFFER);
    }
    Ok(())
}

/// Whether the host may read and write `len` bytes at `gpa` for a doorbell block: RAM of `mem`
/// and inside the VMM's guest-writable memory.
pub(crate) fn block_usable<M: GuestMemory + ?Sized>(
    mem: &M,
    writable: &GuestWritable,
    gpa: u64,
    len: u64,
) -> bool {
    let Ok(n) = usize::try_from(len) else {
        return false;
    };
    mem.check_range(GuestAddress(gpa), n, Permissions::ReadWrite) && writable.contains(gpa, len)
}

/// Step 4: copy the request out of guest memory, once (VIR-MEM-H-007).
pub(crate) fn read_request<M: GuestMemory + ?Sized>(
    mem: &M,
    req: GuestBuffer,
) -> Result<RequestCopy, Status> {
    let mut copy = RequestCopy {
        buf: [0; MAX_BUFFER_LEN as usize],
        len: 0,
    };
    let len = usize::try_from(req.len).map_err(|_| Status::BAD_LENGTH)?;
    let dst = copy.buf.get_mut(..len).ok_or(Status::BAD_LENGTH)?;
    if len != 0 {
        mem.read_slice(dst, GuestAddress(req.gpa))
            .map_err(|_| Status::BAD_BUFFER)?;
    }
    copy.len = len;
    Ok(copy)
}

/// Write the response once (VIR-MEM-H-008). `false` if guest memory refused the write.
pub(crate) fn write_response<M: GuestMemory + ?Sized>(
    mem: &M,
    resp: GuestBuffer,
    bytes: &[u8],
) -> bool {
    if bytes.is_empty() {
        return true;
    }
    mem.write_slice(bytes, GuestAddress(resp.gpa)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap<()> {
        // RAM at 0..0x3000 and 0x5000..0x6000; a hole at 0x3000..0x5000.
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x3000), (GuestAddress(0x5000), 0x1000)])
            .unwrap()
    }

    fn check_buffers_all(
        m: &GuestMemoryMmap<()>,
        req: GuestBuffer,
        resp: GuestBuffer,
        exclude: Option<GuestBuffer>,
    ) -> Result<(), Status> {
        check_buffers(m, req, resp, exclude, &GuestWritable::AllRam)
    }

    fn b(gpa: u64, len: u64) -> GuestBuffer {
        GuestBuffer { gpa, len }
    }

    #[test]
    fn zero_length_buffer_needs_gpa_zero() {
        // VIR-MEM-H-002
        assert_eq!(check_buffers_all(&mem(), b(0, 0), b(0, 0), None), Ok(()));
        assert_eq!(
            check_buffers_all(&mem(), b(0x1000, 0), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0, 0), b(0x2000, 0), None),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn buffers_must_be_eight_byte_aligned() {
        // VIR-MEM-H-003
        for gpa in [0x1001, 0x1004, 0x1002] {
            assert_eq!(
                check_buffers_all(&mem(), b(gpa, 16), b(0x2000, 16), None),
                Err(Status::BAD_BUFFER)
            );
            assert_eq!(
                check_buffers_all(&mem(), b(0x2000, 16), b(gpa, 16), None),
                Err(Status::BAD_BUFFER)
            );
        }
        assert_eq!(
            check_buffers_all(&mem(), b(0x1008, 16), b(0x2008, 16), None),
            Ok(())
        );
    }

    #[test]
    fn buffers_must_not_cross_a_page() {
        // VIR-MEM-H-004
        assert_eq!(
            check_buffers_all(&mem(), b(0x1ff8, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0, 0), b(0x1ff0, 24), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x1ff0, 16), b(0, 0), None),
            Ok(()),
            "ends exactly at the page end"
        );
        // The last page of the address space: end = 2^64 must not overflow.
        assert_eq!(
            check_buffers_all(&mem(), b(u64::MAX - 7, 8), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(u64::MAX - 15, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn request_and_response_must_not_overlap() {
        // VIR-MEM-H-005
        assert_eq!(
            check_buffers_all(&mem(), b(0x1000, 16), b(0x1008, 16), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x1008, 16), b(0x1000, 16), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x1000, 16), b(0x1000, 24), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x1000, 16), b(0x1010, 16), None),
            Ok(()),
            "adjacent is fine"
        );
        // Neither may overlap the doorbell block.
        let block = Some(b(0x1020, 32));
        assert_eq!(
            check_buffers_all(&mem(), b(0x1038, 8), b(0, 0), block),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0, 0), b(0x1010, 24), block),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x1040, 8), b(0x1000, 32), block),
            Ok(())
        );
    }

    #[test]
    fn buffers_must_be_backed_by_ram() {
        // VIR-MEM-H-006
        assert_eq!(
            check_buffers_all(&mem(), b(0x3000, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0, 0), b(0x4ff8, 8), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0x5ff0, 16), b(0x5000, 8), None),
            Ok(())
        );
        assert_eq!(
            check_buffers_all(&mem(), b(0xffff_ffff_0000, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn read_request_copies_exactly_the_request() {
        // VIR-MEM-H-007
        let m = mem();
        m.write_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9], GuestAddress(0x1000))
            .unwrap();
        let copy = read_request(&m, b(0x1000, 8)).unwrap();
        assert_eq!(copy.bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read_request(&m, b(0, 0)).unwrap().bytes(), &[] as &[u8]);
        assert_eq!(
            read_request(&m, b(0x1000, 65)).map(|c| c.len),
            Err(Status::BAD_LENGTH)
        );
        assert_eq!(
            read_request(&m, b(0x3000, 8)).map(|c| c.len),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn vir_mem_h_006_response_only_in_guest_writable_memory() {
        // VIR-MEM-H-006
        let m = mem();
        let w = GuestWritable::Ranges(vec![crate::config::GpaRange {
            start: 0x1000,
            len: 0x1000,
        }]);
        assert_eq!(
            check_buffers(&m, b(0x2000, 16), b(0x1ff0, 16), None, &w),
            Ok(())
        );
        // RAM, but not guest-writable: a response may not go there; a request may.
        assert_eq!(
            check_buffers(&m, b(0, 0), b(0x2000, 16), None, &w),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&m, b(0, 0), b(0x0ff8, 16), None, &w),
            Err(Status::BAD_BUFFER)
        );
        assert!(block_usable(&m, &w, 0x1fe0, 32));
        assert!(!block_usable(&m, &w, 0x2000, 32));
        assert!(!block_usable(&m, &GuestWritable::AllRam, 0x3000, 32));
    }

    const RO: u64 = 0x1_0000;

    /// RAM at `0..RO` and one page mapped read-only in the host at `RO` (a ROM, or the host
    /// view of a read-only memslot).
    fn mem_with_read_only_page() -> GuestMemoryMmap<()> {
        use vm_memory::mmap::{GuestRegionMmap, MmapRegion, MmapRegionBuilder};
        // Linux mmap(2) constants (no libc dependency for one test).
        const PROT_READ: i32 = 1;
        const MAP_PRIVATE: i32 = 0x02;
        const MAP_ANONYMOUS: i32 = 0x20;
        let rw = GuestRegionMmap::new(MmapRegion::new(RO as usize).unwrap(), GuestAddress(0));
        let ro = MmapRegionBuilder::<()>::new(0x1000)
            .with_mmap_prot(PROT_READ)
            .with_mmap_flags(MAP_PRIVATE | MAP_ANONYMOUS)
            .build()
            .unwrap();
        let ro = GuestRegionMmap::new(ro, GuestAddress(RO));
        GuestMemoryMmap::from_regions(vec![rw.unwrap(), ro.unwrap()]).unwrap()
    }

    #[test]
    fn vir_mem_h_006_vir_call_h_006_read_only_memory_is_never_written_and_nothing_changes() {
        // VIR-MEM-H-006, VIR-CALL-H-006
        use crate::config::{GpaRange, HostConfig, Quotas};
        use crate::fixture::vm_config;
        use crate::testing::mock_host;
        use crate::{DoorbellIgnored, PioOutcome};
        use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO};
        use vir_abi::wire::{NegotiateRequest, call_layout};
        use zerocopy::IntoBytes;
        use zerocopy::byteorder::little_endian::{U16, U32, U64};

        let m = mem_with_read_only_page();
        // What made the host fault: the guest-memory object calls the page writable.
        assert!(m.check_range(GuestAddress(RO), 64, Permissions::Write));
        let config = HostConfig::default();
        let port = config.doorbell_port.unwrap();
        let (mut host, _journal) = mock_host(config, 256, 4, 200).unwrap();
        let mut vm_cfg = vm_config(Quotas::default());
        vm_cfg.guest_writable = GuestWritable::Ranges(vec![GpaRange { start: 0, len: RO }]);
        let vm = host.add_vm(vm_cfg).unwrap();
        let req = NegotiateRequest {
            version: U16::new(1),
            reserved0: U16::ZERO,
            reserved1: U32::ZERO,
            features: U64::new(0),
        };
        m.write_slice(req.as_bytes(), GuestAddress(0x1000)).unwrap();
        let layout = call_layout(CallCode::NEGOTIATE).unwrap();
        let (req_len, resp_len) = (
            u64::from(layout.request_len()),
            u64::from(layout.response_len()),
        );
        let before = host.snapshot(vm).unwrap();
        let status = host
            .handle_call(vm, &m, CallCode::NEGOTIATE, 0x1000, req_len, RO, resp_len)
            .unwrap();
        assert_eq!(status, Status::BAD_BUFFER);
        assert_eq!(
            host.snapshot(vm).unwrap(),
            before,
            "negotiated behind a failure"
        );
        // The same call with its response in writable RAM succeeds.
        let status = host
            .handle_call(
                vm,
                &m,
                CallCode::NEGOTIATE,
                0x1000,
                req_len,
                0x2000,
                resp_len,
            )
            .unwrap();
        assert_eq!(status, Status::SUCCESS);
        // A doorbell block on the read-only page is ignored, not written.
        let lo = host
            .pio_write(vm, 0, port + DOORBELL_GPA_LO, RO as u32, &m)
            .unwrap();
        assert_eq!(lo, PioOutcome::Latched);
        let hi = host
            .pio_write(vm, 0, port + DOORBELL_GPA_HI, (RO >> 32) as u32, &m)
            .unwrap();
        assert_eq!(hi, PioOutcome::Ignored(DoorbellIgnored::Unbacked(RO)));
    }
}
