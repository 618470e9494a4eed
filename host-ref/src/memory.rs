//! The memory binding: request and response buffers in guest memory (VIR-MEM-H-001..008).
//!
//! Every binding funnels into these rules. The request is copied once into a host-private
//! buffer before anything is decoded; the response is written once, after the call's state
//! change is complete; a failing call never touches the response buffer.

use vir_abi::call::{BUFFER_ALIGN, MAX_BUFFER_LEN, PAGE_SIZE};
use vir_abi::status::Status;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

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
/// are at most [`MAX_BUFFER_LEN`].
pub(crate) fn check_buffers<M: GuestMemory + ?Sized>(
    mem: &M,
    req: GuestBuffer,
    resp: GuestBuffer,
    exclude: Option<GuestBuffer>,
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
    Ok(())
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

    fn b(gpa: u64, len: u64) -> GuestBuffer {
        GuestBuffer { gpa, len }
    }

    #[test]
    fn zero_length_buffer_needs_gpa_zero() {
        // VIR-MEM-H-002
        assert_eq!(check_buffers(&mem(), b(0, 0), b(0, 0), None), Ok(()));
        assert_eq!(
            check_buffers(&mem(), b(0x1000, 0), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0, 0), b(0x2000, 0), None),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn buffers_must_be_eight_byte_aligned() {
        // VIR-MEM-H-003
        for gpa in [0x1001, 0x1004, 0x1002] {
            assert_eq!(
                check_buffers(&mem(), b(gpa, 16), b(0x2000, 16), None),
                Err(Status::BAD_BUFFER)
            );
            assert_eq!(
                check_buffers(&mem(), b(0x2000, 16), b(gpa, 16), None),
                Err(Status::BAD_BUFFER)
            );
        }
        assert_eq!(
            check_buffers(&mem(), b(0x1008, 16), b(0x2008, 16), None),
            Ok(())
        );
    }

    #[test]
    fn buffers_must_not_cross_a_page() {
        // VIR-MEM-H-004
        assert_eq!(
            check_buffers(&mem(), b(0x1ff8, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0, 0), b(0x1ff0, 24), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x1ff0, 16), b(0, 0), None),
            Ok(()),
            "ends exactly at the page end"
        );
        // The last page of the address space: end = 2^64 must not overflow.
        assert_eq!(
            check_buffers(&mem(), b(u64::MAX - 7, 8), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(u64::MAX - 15, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
    }

    #[test]
    fn request_and_response_must_not_overlap() {
        // VIR-MEM-H-005
        assert_eq!(
            check_buffers(&mem(), b(0x1000, 16), b(0x1008, 16), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x1008, 16), b(0x1000, 16), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x1000, 16), b(0x1000, 24), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x1000, 16), b(0x1010, 16), None),
            Ok(()),
            "adjacent is fine"
        );
        // Neither may overlap the doorbell block.
        let block = Some(b(0x1020, 32));
        assert_eq!(
            check_buffers(&mem(), b(0x1038, 8), b(0, 0), block),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0, 0), b(0x1010, 24), block),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x1040, 8), b(0x1000, 32), block),
            Ok(())
        );
    }

    #[test]
    fn buffers_must_be_backed_by_ram() {
        // VIR-MEM-H-006
        assert_eq!(
            check_buffers(&mem(), b(0x3000, 16), b(0, 0), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0, 0), b(0x4ff8, 8), None),
            Err(Status::BAD_BUFFER)
        );
        assert_eq!(
            check_buffers(&mem(), b(0x5ff0, 16), b(0x5000, 8), None),
            Ok(())
        );
        assert_eq!(
            check_buffers(&mem(), b(0xffff_ffff_0000, 16), b(0, 0), None),
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
}
