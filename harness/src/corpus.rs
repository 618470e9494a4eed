//! The seed corpora, generated from readable descriptions.
//!
//! Each target gets a handful of meaningful seeds (a valid call sequence, a misaligned buffer, a
//! doorbell ring, a forged message...) built with the target's `seed` helpers, plus the
//! regression inputs of findings fixed so far. `fuzz/corpus/<target>/` holds exactly these files;
//! `tests/corpus.rs` checks that the committed files equal [`seeds`] and rewrites them when run
//! with `VIR_BLESS=1`. Files the fuzzer adds to a local corpus are not committed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use vir_abi::call::CallCode;
use vir_abi::hw::vtd::{PostedIrte, RemappedIrte, Svt};
use vir_abi::wire::{ActivateRequest, DoorbellBlock, QueryResponse, Target as WireTarget};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::Target;
use crate::calls::{Via, seed as cs};
use crate::hostile::seed as hs;
use crate::input::Encoder;
use crate::toctou::seed as ts;
use crate::world::WorldConfig;

/// A named seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// File name under `fuzz/corpus/<target>/`.
    pub name: &'static str,
    /// Contents.
    pub bytes: Vec<u8>,
}

fn seed(name: &'static str, bytes: Vec<u8>) -> Seed {
    Seed { name, bytes }
}

fn build(config: WorldConfig, f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    let mut e = Encoder::new();
    config.write(&mut e);
    f(&mut e);
    e.finish()
}

fn decode_wire_seeds() -> Vec<Seed> {
    let query = QueryResponse {
        min_version: U16::new(1),
        max_version: U16::new(1),
        message_format: 1,
        max_msi_log2: 5,
        vm_state: 1,
        reserved0: 0,
        features_offered: U64::new(0x3f),
        features_active: U64::new(0x13),
        active_version: U16::new(1),
        reserved1: U16::ZERO,
        irte_quota: U32::new(256),
        vector_quota: U32::new(256),
        reserved2: U32::ZERO,
    };
    let activate = ActivateRequest {
        handle: U32::new(0x0001_0001),
        subhandle: U16::new(0),
        flags: U16::new(1),
        target: WireTarget::new(2, 0x41),
    };
    let block = DoorbellBlock {
        call: U32::new(0x0011),
        status: U32::new(0xffff_ffff),
        request_gpa: U64::new(0x1000),
        request_len: U32::new(16),
        response_len: U32::new(24),
        response_gpa: U64::new(0x2000),
    };
    let mut registers = Encoder::new();
    registers
        .u64(0x5649_0002)
        .u32(6)
        .u32(0x0001_0001)
        .u32(0b111)
        .u32(0x5650)
        .u32(0)
        .u32(0x4000_0100);
    // The base leaf of a vIR block at 0x4000_0100: EAX = highest leaf, the signature in EBX,
    // ECX, EDX (VIR-DISC-H-003).
    let [sb, sc, sd] = vir_abi::discovery::signature_regs();
    let mut base_leaf = Encoder::new();
    base_leaf
        .u64(0x5649_0001)
        .u32(0)
        .u32(0x4000_0101)
        .u32(sb)
        .u32(sc)
        .u32(sd)
        .u32(0x4000_0100);
    // Regression (fixed in vir-abi): a signature with base 0xFFFF_FFFF made `is_vir_base`
    // compute `base + 1` and overflow.
    let mut top_base = Encoder::new();
    top_base
        .u64(0x5649_0001)
        .u32(0)
        .u32(0x4000_0101)
        .u32(sb)
        .u32(sc)
        .u32(sd)
        .u32(u32::MAX);
    // The reference guest's discovery over a base leaf at 0x4000_0100 and an info leaf offering
    // VMCALL and the doorbell at 0x5650 (after the 32 bytes of RAX, status, registers, base).
    let mut guest = Encoder::new();
    guest.u64(0x5649_0001).u32(0).bytes(&[0; 20]);
    guest.u32(1 << 31).u8(1);
    guest.u32(0x4000_0101).u32(sb).u32(sc).u32(sd);
    guest.u32(0x0001_0001).u32(0b101).u32(0x5650).u32(0);
    guest.u16(0x5600).u32(0x100);
    vec![
        seed("zeros-64", vec![0; 64]),
        seed("registers-base-leaf", base_leaf.finish()),
        seed("guest-discovery-doorbell", guest.finish()),
        seed("regression-is-vir-base-overflow", top_base.finish()),
        seed("query-response", query.as_bytes().to_vec()),
        seed("activate-reserve", activate.as_bytes().to_vec()),
        seed("doorbell-activate", block.as_bytes().to_vec()),
        seed("registers-info-leaf", registers.finish()),
        seed("ones-40", vec![0xff; 40]),
    ]
}

fn decode_hw_seeds() -> Vec<Seed> {
    let posted = PostedIrte {
        present: true,
        fpd: false,
        avail: 0,
        urgent: false,
        vector: 0x41,
        pda: 0x10_0040,
        sid: 0x3a00,
        sq: 0,
        svt: Svt::VerifySid,
    }
    .encode()
    .unwrap_or(0);
    let remapped = RemappedIrte {
        present: true,
        fpd: false,
        dest_mode_logical: false,
        redirection_hint: false,
        trigger_level: false,
        delivery_mode: 0,
        avail: 0,
        vector: 0x22,
        dest: 3,
        sid: 0x4041,
        sq: 0,
        svt: Svt::VerifyBus,
    }
    .encode(vir_abi::hw::ApicMode::XApic)
    .unwrap_or(0);
    let mut descriptor = [0u8; 64];
    descriptor[0] = 0x02; // PIR bit 1
    descriptor[32] = 0x01; // ON
    descriptor[34] = 0xf2; // NV
    descriptor[37] = 0x03; // NDST = 3 << 8 (xAPIC 3)
    let hw = |msg: [u32; 3],
              irte: u128,
              rid: u16,
              pd: &[u8; 64],
              amd32: u32,
              amd128: u128,
              irta: u64| {
        let mut e = Encoder::new();
        e.u32(msg[0]).u32(msg[1]).u32(msg[2]);
        e.u128(irte).u16(rid).bytes(pd);
        e.u32(amd32).u128(amd128).u64(irta).u8(0x26).u8(3);
        e.finish()
    };
    vec![
        seed(
            "vtd-remappable-posted",
            hw(
                [0xFEE2_4698, 0, 0],
                posted,
                0x3a00,
                &[0; 64],
                0x0041_0201,
                1,
                0x2000_080b,
            ),
        ),
        seed(
            "compat-remapped-xapic",
            hw(
                [0xFEE0_3000, 0, 0x4031],
                remapped,
                0x4108,
                &descriptor,
                0x4100_0001,
                0,
                0xb,
            ),
        ),
        seed(
            "amd-guest-mode",
            hw(
                [0xFEE0_0004, 0, 0x7ff],
                0,
                0,
                &[0; 64],
                0x80,
                (1 << 7) | (0x41 << 64) | (0x12345 << 76) | 1,
                0x7f0,
            ),
        ),
        seed("all-ones", vec![0xff; 140]),
    ]
}

fn host_calls_seeds() -> Vec<Seed> {
    let d = WorldConfig::default();
    let remapped_xapic = WorldConfig {
        posted: false,
        x2apic: false,
        ..WorldConfig::default()
    };
    vec![
        seed(
            "lifecycle-three-bindings",
            build(d, |e| {
                cs::negotiate(e, 0, Via::Memory);
                cs::allocate(e, 0, 2, 3, Via::Register);
                cs::activate(e, 0, 0, 0, true, 0, 0x11, Via::Doorbell);
                cs::activate(e, 0, 0, 0, false, 1, 0x12, Via::Memory);
                cs::set_affinity(e, 0, 0, 0, 0, 0x13);
                cs::bare(e, 0, CallCode::QUERY_QUOTA, Via::Memory);
                cs::handle_call(e, 0, CallCode::DEACTIVATE, 0, 0);
                cs::handle_call(e, 0, CallCode::FREE, 0, 0);
            }),
        ),
        seed(
            "msi-block-remapped-xapic-two-vms",
            build(remapped_xapic, |e| {
                cs::negotiate(e, 0, Via::Memory);
                cs::negotiate(e, 1, Via::Register);
                cs::allocate(e, 0, 1, 3, Via::Memory);
                cs::allocate(e, 1, 1, 2, Via::Memory);
                for sub in 0..4 {
                    cs::activate(e, 0, 0, sub, false, sub & 1, 0x20 + sub, Via::Memory);
                }
                cs::activate(e, 1, 0, 1, false, 1, 0x30, Via::Register);
                // VM 0 names VM 1's handle (VIR-SEC-H-004) and then a stale one.
                cs::handle_call(e, 0, CallCode::FREE, 225, 0);
                cs::fault(e, 3, 1, 0);
                cs::set_affinity(e, 0, 0, 1, 0, 0x21);
                cs::platform_reset(e, 1);
                cs::bare(e, 1, CallCode::QUERY, Via::Doorbell);
            }),
        ),
        seed(
            "backend-failures-unwind",
            build(d, |e| {
                cs::negotiate(e, 1, Via::Memory);
                cs::allocate(e, 1, 3, 1, Via::Memory);
                cs::fault(e, 0, 1, 1);
                cs::activate(e, 1, 0, 0, false, 0, 0x05, Via::Memory);
                cs::fault(e, 2, 2, 0);
                cs::activate(e, 1, 0, 0, false, 0, 0x05, Via::Memory);
                cs::activate(e, 1, 0, 0, false, 0, 0x05, Via::Memory);
                cs::activate(e, 1, 0, 0, false, 0, 0x05, Via::Memory);
            }),
        ),
        seed(
            "raw-buffers-and-registers",
            build(d, |e| {
                cs::legacy(e, 0, true);
                cs::negotiate(e, 0, Via::Memory);
                cs::legacy(e, 0, false);
                cs::raw(e, 0, Via::Memory, 0x0010, (14, 2), (5, 1), &[0; 64]);
                cs::raw(e, 0, Via::Memory, 0x0010, (3, 2), (5, 1), &[0; 64]);
                cs::raw(e, 0, Via::Memory, 0x0010, (1, 2), (2, 1), &[0; 64]);
                cs::raw(e, 0, Via::Memory, 0x0010, (8, 2), (5, 1), &[0; 64]);
                cs::raw(e, 0, Via::Doorbell, 0x0001, (0, 0), (5, 5), &[0; 64]);
                cs::registers(e, 1, 0, [0x5649_0001, 0, 0, 0x2000, 40, 0]);
                cs::registers(e, 1, 0, [0x1_5649_0001, 0, 0, 0x2000, 40, 0]);
                cs::registers(e, 1, 2, [0x5649_0001, 0, 0, 0x2000, 40, 0]);
                cs::port(e, 0, 0, 0x3001);
                cs::port(e, 0, 4, 0);
                cs::port(e, 0, 2, 7);
            }),
        ),
        seed(
            "quota-and-table-pressure",
            build(d, |e| {
                cs::negotiate(e, 0, Via::Memory);
                cs::negotiate(e, 1, Via::Memory);
                // VM 0: an MSI block of 8 and MSI-X 0..16 reach its quota of 24; one more is
                // QUOTA_EXCEEDED (VIR-ALC-H-008).
                cs::allocate(e, 0, 1, 3, Via::Memory);
                for i in 0..16 {
                    cs::allocate(e, 0, 2, i, Via::Memory);
                }
                cs::allocate(e, 0, 3, 0, Via::Memory);
                // VM 1: a block of 8 and MSI-X 0..8 fill the 40 entries; then TABLE_FULL
                // (VIR-ALC-H-009) while VM 1 is far below its quota.
                cs::allocate(e, 1, 1, 3, Via::Memory);
                for i in 0..8 {
                    cs::allocate(e, 1, 2, i, Via::Memory);
                }
                cs::allocate(e, 1, 3, 0, Via::Memory);
                for i in 0..10 {
                    cs::activate(e, 0, i, 0, false, i & 1, 0x20 + i, Via::Memory);
                }
            }),
        ),
    ]
}

fn toctou_seeds() -> Vec<Seed> {
    let d = WorldConfig::default();
    let mut out = Vec::new();
    let allocate = |e: &mut Encoder| {
        e.u8(cs::code_index(CallCode::ALLOCATE))
            .u8(0)
            .u8(1)
            .u8(3)
            .u8(0xff)
            .u8(0);
    };
    let mut e = Encoder::new();
    ts::header(&mut e, d, 1);
    cs::negotiate(&mut e, 0, Via::Memory);
    ts::target(&mut e, 0, false);
    allocate(&mut e);
    ts::schedule(&mut e, &[[0; 8], [0xff; 8], [0x55; 8]]);
    out.push(seed("allocate-flipped-after-read", e.finish()));

    let mut e = Encoder::new();
    ts::header(&mut e, d, 1);
    cs::negotiate(&mut e, 0, Via::Memory);
    ts::target(&mut e, 0, false);
    allocate(&mut e);
    ts::schedule(&mut e, &[[0, 0, 0, 0, 0xff, 0, 0, 0]]);
    out.push(seed("allocate-kind-flipped-before-read", e.finish()));

    let mut e = Encoder::new();
    ts::header(&mut e, d, 0);
    ts::target(&mut e, 1, false);
    e.u8(cs::code_index(CallCode::NEGOTIATE))
        .u8(3)
        .u8(0)
        .u8(0xff)
        .u8(0);
    ts::schedule(&mut e, &[[0; 8], [0x01; 8], [0x80; 8]]);
    out.push(seed("doorbell-negotiate", e.finish()));

    let mut e = Encoder::new();
    ts::header(&mut e, d, 3);
    cs::negotiate(&mut e, 0, Via::Memory);
    cs::allocate(&mut e, 0, 2, 1, Via::Memory);
    cs::activate(&mut e, 0, 0, 0, false, 0, 0x10, Via::Memory);
    ts::target(&mut e, 0, false);
    // SET_AFFINITY of the live handle, flipped between every read.
    e.u8(cs::code_index(CallCode::SET_AFFINITY))
        .u8(2)
        .u8(0)
        .u32(0)
        .u8(0)
        .u8(3)
        .u8(0x20)
        .u8(0xff)
        .u8(1);
    ts::schedule(
        &mut e,
        &[[0x00, 0, 0, 0, 0, 0, 0, 0], [0xff; 8], [0x0f; 8], [0xf0; 8]],
    );
    out.push(seed("set-affinity-register-binding", e.finish()));

    let mut e = Encoder::new();
    ts::header(&mut e, d, 1);
    cs::negotiate(&mut e, 1, Via::Memory);
    ts::target(&mut e, 1, true);
    // A raw doorbell call whose block is the standard one.
    e.u8(3).u32(0x0010).u8(1).u8(2).u8(5).u8(1);
    e.bytes(&[0x00, 0x01, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    e.bytes(&[0; 48]);
    e.u8(1).u8(0);
    ts::schedule(&mut e, &[[0, 0, 0, 0, 0, 0, 0, 0x80], [0x10; 8]]);
    out.push(seed("raw-doorbell-allocate", e.finish()));
    out
}

fn hostile_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for remapped in [false, true] {
        let mut e = Encoder::new();
        hs::header(&mut e, remapped, [0xffff, 0x5555]);
        // Every storage kind (device a: MSI, IMS device, IMS system; device b: MSI-X): the
        // other VM's message for the same slot, then a random handle.
        for (dev, kind, other) in [(0, 0, 0), (1, 1, 10), (0, 2, 4), (0, 3, 8)] {
            hs::forge(&mut e, 0, dev, kind, 0, 3, &[other]);
            hs::forge(&mut e, 0, dev, kind, 1, 1, &[kind * 7, 1]);
        }
        // Compatibility format to APIC 0 vector 0x41 from VM 1's IMS.
        hs::forge(&mut e, 1, 0, 2, 1, 5, &[0, 0, 0x41]);
        // Raw bytes: VM 1's MSI-X entry 1 address, VM 0's MSI capability address, VM 0's
        // queue context 0.
        hs::raw_storage(
            &mut e,
            1,
            1,
            1,
            16,
            [0x98, 0x46, 0xe2, 0xfe, 0, 0, 0, 0],
            4,
            1,
            1,
        );
        hs::raw_storage(
            &mut e,
            0,
            0,
            0,
            4,
            [0x18, 0x00, 0xe0, 0xfe, 0, 0, 0, 0],
            4,
            0,
            0,
        );
        hs::raw_storage(
            &mut e,
            0,
            0,
            3,
            0,
            [0x38, 0x00, 0xe0, 0xfe, 0, 0, 0, 0],
            4,
            3,
            0,
        );
        // DMA from a requester id no VM has, and from VM 0's device a with its own message.
        hs::dma(&mut e, 0, 4, 2, &[3, 0]);
        hs::dma(&mut e, 1, 0, 4, &[2]);
        // The guest moves and frees, then old messages are replayed.
        hs::guest(&mut e, 0, 11, 2, 2);
        hs::forge(&mut e, 0, 1, 1, 1, 4, &[11]);
        hs::guest(&mut e, 1, 10, 1, 0);
        hs::forge(&mut e, 1, 1, 1, 0, 4, &[10]);
        hs::control(&mut e, 0, 1, 0x80, 1, 2);
        hs::forge(&mut e, 0, 1, 1, 2, 4, &[12]);
        hs::control(&mut e, 0, 1, 0x00, 1, 2);
        hs::control(&mut e, 1, 0, 0x02, 0, 0);
        out.push(Seed {
            name: if remapped {
                "every-kind-remapped"
            } else {
                "every-kind-posted"
            },
            bytes: e.finish(),
        });
    }
    let mut e = Encoder::new();
    hs::header(&mut e, false, [0, 0]);
    hs::forge(&mut e, 0, 1, 1, 0, 4, &[10]);
    hs::forge(
        &mut e,
        0,
        0,
        2,
        0,
        0,
        &[0x18, 0, 0xe0, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    out.push(seed("reserved-only", e.finish()));
    out
}

/// The seeds of `target`, in file-name order of generation.
pub fn seeds(target: Target) -> Vec<Seed> {
    match target {
        Target::DecodeWire => decode_wire_seeds(),
        Target::DecodeHw => decode_hw_seeds(),
        Target::HostCalls => host_calls_seeds(),
        Target::Toctou => toctou_seeds(),
        Target::HostileStorage => hostile_seeds(),
    }
}

/// `fuzz/corpus/<target>` under the fuzz workspace `fuzz_root`.
pub fn corpus_dir(fuzz_root: &Path, target: Target) -> PathBuf {
    fuzz_root.join("corpus").join(target.name())
}

/// `fuzz/artifacts/<target>` under the fuzz workspace `fuzz_root`.
pub fn artifacts_dir(fuzz_root: &Path, target: Target) -> PathBuf {
    fuzz_root.join("artifacts").join(target.name())
}

/// Write every seed of every target under `fuzz_root` (creating the directories); returns the
/// files written.
pub fn write_seeds(fuzz_root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for t in Target::ALL {
        let dir = corpus_dir(fuzz_root, t);
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(artifacts_dir(fuzz_root, t))?;
        for s in seeds(t) {
            let path = dir.join(s.name);
            fs::write(&path, &s.bytes)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Every regular file in `dir` except `.gitkeep`, sorted (an absent directory has none).
pub fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_are_unique_per_target() {
        for t in Target::ALL {
            let s = seeds(t);
            let mut names: Vec<_> = s.iter().map(|x| x.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), s.len(), "{t}");
            assert!((3..=10).contains(&s.len()), "{t}: a handful of seeds");
        }
    }
}
