//! Bodies of the `decode_wire` and `decode_hw` targets: every wire structure and every hardware
//! format of `vir-abi` decoded from arbitrary bytes, with their semantic checks, and re-encoded.
//!
//! Decoding never panics (the crate promises it; the fuzzer checks it), and a successful decode
//! re-encodes to the input except for bits the format documents as don't care.

use core::fmt::{self, Write as _};

use vir_abi::call::{CallCode, decode_rax, encode_rax};
use vir_abi::discovery::{self, InfoLeaf};
use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_abi::hw::amd::{AmdIrte32Entry, AmdIrte128, AmdMsi};
use vir_abi::hw::msi::{CompatMsi, MessageKind, MsiMessage, classify};
use vir_abi::hw::posted::PostedDescriptor;
use vir_abi::hw::vtd::{
    Irta, Irte, IrteRaw, PostedIrte, RemappableMsi, RemappedIrte, Svt, VtdFaultReason, sid_matches,
    sq_mask,
};
use vir_abi::layout::WireLayout;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    DoorbellBlock, FreeRequest, MessageFormat, NegotiateRequest, NegotiateResponse, QueryResponse,
    QuotaResponse, SetAffinityRequest, StorageKind, Target, activate_flags, call_layout,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::input::Input;

/// A hardware or wire format checked by the decode targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A vIR wire structure (its C name).
    Wire(&'static str),
    /// The 12-byte MSI message serialization.
    MsiBytes,
    /// x86 compatibility-format MSI (with or without the extended destination id).
    CompatMsi {
        /// Extended destination id offered.
        ext_dest_id: bool,
    },
    /// VT-d remappable MSI.
    RemappableMsi,
    /// AMD-Vi MSI.
    AmdMsi,
    /// VT-d IRTE, dispatching on IM.
    VtdIrte(ApicMode),
    /// VT-d IRTE decoded as remapped regardless of IM.
    RemappedIrte(ApicMode),
    /// VT-d IRTE decoded as posted regardless of IM.
    PostedIrte,
    /// The posted-interrupt descriptor.
    PostedDescriptor,
    /// AMD-Vi 32-bit IRTE.
    AmdIrte32,
    /// AMD-Vi 128-bit IRTE.
    AmdIrte128,
    /// VT-d IRTA register.
    Irta,
    /// The CPUID info leaf.
    InfoLeaf,
    /// The register binding's `RAX`.
    Rax,
    /// The reference guest's discovery over hostile CPUID leaves.
    GuestDiscovery,
}

/// What a decode target found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeFinding {
    /// Decoding succeeded but encoding the result gave other bits (outside the don't-care bits).
    RoundTrip {
        /// The format.
        format: Format,
        /// The input bits (MSI messages: address_lo, address_hi, data from bit 0 up).
        input: u128,
        /// The re-encoded bits.
        output: u128,
    },
    /// Encoding a successfully decoded value failed.
    EncodeFailed {
        /// The format.
        format: Format,
        /// The input bits.
        input: u128,
    },
    /// A structure was accepted from a byte string of the wrong length.
    WrongLengthAccepted {
        /// The format.
        format: Format,
        /// The length accepted.
        len: usize,
    },
    /// Two ways of asking the same question disagreed (the check names which).
    Inconsistent {
        /// The format.
        format: Format,
        /// Which consistency check failed.
        check: &'static str,
        /// The input bits.
        input: u128,
    },
}

impl fmt::Display for DecodeFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DecodeFinding {}

/// What a decode run covered: how many decodes were attempted and how many succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Decodes attempted.
    pub attempted: u32,
    /// Decodes that succeeded (and round-tripped).
    pub decoded: u32,
}

impl DecodeReport {
    fn saw(&mut self, ok: bool) {
        self.attempted += 1;
        self.decoded += u32::from(ok);
    }
}

/// A sink for `Display` output: formatting every error and value must not panic.
struct Sink(usize);

impl fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.wrapping_add(s.len());
        Ok(())
    }
}

fn show(v: &dyn fmt::Display) {
    let mut s = Sink(0);
    let _ = write!(s, "{v}");
}

fn show_debug(v: &dyn fmt::Debug) {
    let mut s = Sink(0);
    let _ = write!(s, "{v:?}");
}

fn wire_one<T>(data: &[u8], report: &mut DecodeReport) -> Result<Option<T>, DecodeFinding>
where
    T: FromBytes + IntoBytes + Immutable + KnownLayout + WireLayout + Copy + fmt::Debug,
{
    let format = Format::Wire(T::C_NAME);
    let size = core::mem::size_of::<T>();
    // Exactly the structure's length is required, no more and no less.
    if data.len() != size && T::read_from_bytes(data).is_ok() {
        return Err(DecodeFinding::WrongLengthAccepted {
            format,
            len: data.len(),
        });
    }
    let Some(window) = data.get(..size) else {
        report.saw(false);
        return Ok(None);
    };
    let Ok(v) = T::read_from_bytes(window) else {
        return Err(DecodeFinding::Inconsistent {
            format,
            check: "exact-length read refused",
            input: 0,
        });
    };
    if v.as_bytes() != window {
        return Err(DecodeFinding::Inconsistent {
            format,
            check: "the structure's bytes differ from the bytes it was read from",
            input: window.len() as u128,
        });
    }
    // Every field is reachable through the layout descriptors.
    let mut covered = 0;
    for f in T::FIELDS {
        if window.get(f.offset..f.offset + f.size).is_none() {
            return Err(DecodeFinding::Inconsistent {
                format,
                check: "field outside the structure",
                input: f.offset as u128,
            });
        }
        covered += f.size;
    }
    if covered != size {
        return Err(DecodeFinding::Inconsistent {
            format,
            check: "fields do not tile the structure",
            input: covered as u128,
        });
    }
    show_debug(&v);
    report.saw(true);
    Ok(Some(v))
}

fn features(bits: u64) {
    let f = Features(bits);
    show(&f);
    let _ = f.difference(Features::V1_DEFINED).is_empty();
}

fn target_semantics(t: &Target) -> Result<(), DecodeFinding> {
    let zero = t.reserved0 == 0 && t.reserved1.get() == 0;
    if t.reserved_is_zero() != zero {
        return Err(DecodeFinding::Inconsistent {
            format: Format::Wire(Target::C_NAME),
            check: "Target::reserved_is_zero",
            input: u128::from(t.reserved0),
        });
    }
    let rebuilt = Target::new(t.apic_id.get(), t.vector);
    if zero && rebuilt != *t {
        return Err(DecodeFinding::Inconsistent {
            format: Format::Wire(Target::C_NAME),
            check: "Target::new",
            input: u128::from(t.apic_id.get()),
        });
    }
    Ok(())
}

fn call_code_semantics(code: CallCode) -> Result<(), DecodeFinding> {
    show(&code);
    show_debug(&code);
    let layout = call_layout(code);
    if layout.is_some() != code.is_v1() {
        return Err(DecodeFinding::Inconsistent {
            format: Format::Rax,
            check: "call_layout covers exactly the v1 calls",
            input: u128::from(code.0),
        });
    }
    if decode_rax(encode_rax(code)) != Some(code) {
        return Err(DecodeFinding::RoundTrip {
            format: Format::Rax,
            input: u128::from(code.0),
            output: u128::from(encode_rax(code)),
        });
    }
    Ok(())
}

fn status_semantics(status: Status) {
    show(&status);
    let _ = (status.errno(), status.errno_name(), status.is_known());
}

/// The `decode_wire` body: `data` (whole and as prefixes) as every request and response
/// structure and the doorbell block; each decoded structure's fields run through the semantic
/// helpers of `vir-abi` (call codes, statuses, features, storage kinds, formats, targets), and
/// the trailing bytes feed the register-binding and CPUID decoders.
pub fn decode_wire(data: &[u8]) -> Result<DecodeReport, DecodeFinding> {
    let mut r = DecodeReport::default();
    if let Some(q) = wire_one::<QueryResponse>(data, &mut r)? {
        let _ = MessageFormat(q.message_format).name();
        features(q.features_offered.get());
        features(q.features_active.get());
    }
    if let Some(n) = wire_one::<NegotiateRequest>(data, &mut r)? {
        features(n.features.get());
    }
    if let Some(n) = wire_one::<NegotiateResponse>(data, &mut r)? {
        features(n.features.get());
    }
    if let Some(a) = wire_one::<AllocateRequest>(data, &mut r)? {
        let kind = StorageKind(a.kind);
        show_debug(&kind);
        if kind.name().is_some() != kind.gating_feature().is_some() {
            return Err(DecodeFinding::Inconsistent {
                format: Format::Wire(AllocateRequest::C_NAME),
                check: "every named kind has a gating feature",
                input: u128::from(a.kind),
            });
        }
    }
    wire_one::<AllocateResponse>(data, &mut r)?;
    if let Some(t) = wire_one::<Target>(data, &mut r)? {
        target_semantics(&t)?;
    }
    if let Some(a) = wire_one::<ActivateRequest>(data, &mut r)? {
        target_semantics(&a.target)?;
        let _ = a.flags.get() & !activate_flags::V1_DEFINED;
    }
    if let Some(a) = wire_one::<ActivateResponse>(data, &mut r)? {
        show_debug(&MessageFormat(a.format));
        let msg = MsiMessage::new(a.address_lo.get(), a.address_hi.get(), a.data.get());
        let _ = classify(msg);
    }
    if let Some(s) = wire_one::<SetAffinityRequest>(data, &mut r)? {
        target_semantics(&s.target)?;
    }
    wire_one::<DeactivateRequest>(data, &mut r)?;
    wire_one::<FreeRequest>(data, &mut r)?;
    wire_one::<QuotaResponse>(data, &mut r)?;
    if let Some(b) = wire_one::<DoorbellBlock>(data, &mut r)? {
        let call = b.call.get();
        call_code_semantics(CallCode(call as u16))?;
        status_semantics(Status(b.status.get()));
    }

    // The same bytes as registers: RAX of the register binding, a status, a CPUID leaf and a
    // candidate base leaf.
    let mut input = Input::new(data);
    let rax = input.u64();
    match decode_rax(rax) {
        Some(code) => {
            if encode_rax(code) != rax {
                return Err(DecodeFinding::RoundTrip {
                    format: Format::Rax,
                    input: u128::from(rax),
                    output: u128::from(encode_rax(code)),
                });
            }
            call_code_semantics(code)?;
        }
        None => {
            if rax >> 16 == vir_abi::call::HYPERCALL_BASE >> 16 {
                return Err(DecodeFinding::Inconsistent {
                    format: Format::Rax,
                    check: "a vIR RAX was not recognised",
                    input: u128::from(rax),
                });
            }
        }
    }
    status_semantics(Status(input.u32()));
    let regs = [input.u32(), input.u32(), input.u32(), input.u32()];
    r.saw(info_leaf(regs)?);
    let base = input.u32();
    let _ = discovery::is_vir_base(regs[0], regs[1], regs[2], regs[3], base);
    guest_discovery(&mut input, &mut r)?;
    Ok(r)
}

/// CPUID as a hostile or broken hypervisor answers it: leaf 1's ECX, one candidate base leaf and
/// its info leaf from the input, zeros elsewhere. Every leaf read is logged.
struct HostileCpuid {
    ecx1: u32,
    base: u32,
    base_regs: [u32; 4],
    info_regs: [u32; 4],
    reads: Vec<u32>,
}

impl vir_guest::Cpuid for HostileCpuid {
    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> vir_guest::CpuidResult {
        self.reads.push(leaf);
        let [eax, ebx, ecx, edx] = match leaf {
            1 => [0, 0, self.ecx1, 0],
            l if l == self.base => self.base_regs,
            l if Some(l) == self.base.checked_add(discovery::CPUID_INFO_OFFSET) => self.info_regs,
            _ => [0; 4],
        };
        vir_guest::CpuidResult { eax, ebx, ecx, edx }
    }
}

/// The reference guest's discovery (VIR-DISC-G-001/002) over hostile CPUID leaves: no panic,
/// no hypervisor leaf read without CPUID.1:ECX\[31\], and vIR reported present only for an exact
/// signature, an EAX reaching the info leaf, a decodable info leaf and a range holding version 1.
fn guest_discovery(input: &mut Input<'_>, r: &mut DecodeReport) -> Result<(), DecodeFinding> {
    use vir_guest::{Platform, discover};
    let ecx1 = input.u32();
    let k = u32::from(input.u8());
    let base = discovery::CPUID_RANGE_FIRST + k * discovery::CPUID_STRIDE;
    let mut cpu = HostileCpuid {
        ecx1,
        base,
        base_regs: [input.u32(), input.u32(), input.u32(), input.u32()],
        info_regs: [input.u32(), input.u32(), input.u32(), input.u32()],
        reads: Vec::new(),
    };
    let found = discover(&mut cpu);
    let wrong = |check| DecodeFinding::Inconsistent {
        format: Format::GuestDiscovery,
        check,
        input: u128::from(base),
    };
    if ecx1 & discovery::CPUID1_ECX_HYPERVISOR == 0 {
        if found != Ok(Platform::BareMetal) || cpu.reads != [1] {
            return Err(wrong(
                "hypervisor leaves read or vIR found without CPUID.1:ECX[31]",
            ));
        }
        r.saw(false);
        return Ok(());
    }
    let [eax, ebx, ecx, edx] = cpu.base_regs;
    let signed = discovery::is_vir_base(eax, ebx, ecx, edx, base);
    match found {
        Ok(Platform::Vir(iface)) => {
            let [ia, ib, ic, id] = cpu.info_regs;
            let info = InfoLeaf::decode(ia, ib, ic, id);
            let ok = signed
                && iface.base == base
                && iface.max_leaf == eax
                && info == Ok(iface.info)
                && iface.info.min_version <= vir_abi::VIR_VERSION_1
                && vir_abi::VIR_VERSION_1 <= iface.info.max_version;
            if !ok {
                return Err(wrong("vIR reported for leaves that do not qualify"));
            }
            let port = input.u16();
            let count = input.u32();
            let allowed = iface.user_io_grant_allowed(port, count);
            if let Some(db) = iface.doorbell_ports() {
                let (s, e) = (u64::from(port), u64::from(port) + u64::from(count));
                let overlaps = count != 0 && s < u64::from(db.end) && u64::from(db.start) < e;
                if allowed == overlaps {
                    return Err(wrong(
                        "user I/O grant over the doorbell ports (VIR-CALL-G-003)",
                    ));
                }
            }
            r.saw(true);
        }
        Ok(Platform::HypervisorWithoutVir) => {
            if signed {
                return Err(wrong("a qualifying signature was missed"));
            }
            r.saw(false);
        }
        Ok(Platform::BareMetal) => return Err(wrong("bare metal reported with ECX[31] set")),
        Err(e) => {
            if !signed {
                return Err(wrong("an error for leaves without the signature"));
            }
            show(&e);
            r.saw(false);
        }
    }
    Ok(())
}

fn info_leaf([eax, ebx, ecx, edx]: [u32; 4]) -> Result<bool, DecodeFinding> {
    let Ok(leaf) = InfoLeaf::decode(eax, ebx, ecx, edx) else {
        return Ok(false);
    };
    // ECX 31:16 and EDX are reserved: the guest ignores them (don't care on decode).
    let out = leaf.encode();
    let expected = [eax, ebx, ecx & 0xffff, 0];
    if out != expected {
        return Err(DecodeFinding::RoundTrip {
            format: Format::InfoLeaf,
            input: pack4(expected),
            output: pack4(out),
        });
    }
    Ok(true)
}

fn pack4(w: [u32; 4]) -> u128 {
    w.iter()
        .enumerate()
        .fold(0u128, |acc, (i, &x)| acc | u128::from(x) << (32 * i))
}

fn pack_msg(m: MsiMessage) -> u128 {
    pack4([m.address_lo, m.address_hi, m.data, 0])
}

fn round_trip(format: Format, input: u128, output: u128) -> Result<(), DecodeFinding> {
    if input == output {
        Ok(())
    } else {
        Err(DecodeFinding::RoundTrip {
            format,
            input,
            output,
        })
    }
}

fn msi(msg: MsiMessage, r: &mut DecodeReport) -> Result<(), DecodeFinding> {
    let bytes = msg.to_bytes();
    let back = MsiMessage::from_bytes(&bytes).map_err(|_| DecodeFinding::EncodeFailed {
        format: Format::MsiBytes,
        input: pack_msg(msg),
    })?;
    round_trip(Format::MsiBytes, pack_msg(msg), pack_msg(back))?;
    if MsiMessage::from_bytes(&bytes[..11]).is_ok() {
        return Err(DecodeFinding::WrongLengthAccepted {
            format: Format::MsiBytes,
            len: 11,
        });
    }
    let kind = classify(msg);
    for ext_dest_id in [false, true] {
        let format = Format::CompatMsi { ext_dest_id };
        match CompatMsi::decode(msg, ext_dest_id) {
            Ok(c) => {
                r.saw(true);
                if kind != Ok(MessageKind::Compat) {
                    return Err(DecodeFinding::Inconsistent {
                        format,
                        check: "compat decode of a non-compat message",
                        input: pack_msg(msg),
                    });
                }
                let out = c
                    .encode(ext_dest_id)
                    .map_err(|_| DecodeFinding::EncodeFailed {
                        format,
                        input: pack_msg(msg),
                    })?;
                round_trip(format, pack_msg(msg), pack_msg(out))?;
            }
            Err(e) => {
                r.saw(false);
                show(&e);
            }
        }
    }
    match RemappableMsi::decode(msg) {
        Ok(m) => {
            r.saw(true);
            if kind != Ok(MessageKind::Remappable) {
                return Err(DecodeFinding::Inconsistent {
                    format: Format::RemappableMsi,
                    check: "remappable decode of a non-remappable message",
                    input: pack_msg(msg),
                });
            }
            // Address bits 1:0 are don't care; with SHV = 0 the data is don't care.
            let out = m.encode();
            let care_data = if m.shv { msg.data } else { 0 };
            let expect = MsiMessage::new(msg.address_lo & !3, msg.address_hi, care_data);
            round_trip(Format::RemappableMsi, pack_msg(expect), pack_msg(out))?;
            let split = RemappableMsi::decode_address(msg)
                .and_then(|a| RemappableMsi::check_data(a.shv, msg.data).map(|()| a));
            if split != Ok(m) {
                return Err(DecodeFinding::Inconsistent {
                    format: Format::RemappableMsi,
                    check: "decode != decode_address + check_data",
                    input: pack_msg(msg),
                });
            }
            let _ = m.irte_index();
        }
        Err(e) => {
            r.saw(false);
            show(&e);
            show(&e.fault_reason());
        }
    }
    match AmdMsi::decode(msg) {
        Ok(m) => {
            r.saw(true);
            let out = m.encode().map_err(|_| DecodeFinding::EncodeFailed {
                format: Format::AmdMsi,
                input: pack_msg(msg),
            })?;
            round_trip(Format::AmdMsi, pack_msg(msg), pack_msg(out))?;
        }
        Err(e) => {
            r.saw(false);
            show(&e);
        }
    }
    Ok(())
}

fn vtd_irte(raw: u128, rid: u16, r: &mut DecodeReport) -> Result<(), DecodeFinding> {
    let im = raw & (1 << 15) != 0;
    for mode in [ApicMode::XApic, ApicMode::X2Apic] {
        let format = Format::VtdIrte(mode);
        match Irte::decode(raw, mode) {
            Ok(e) => {
                r.saw(true);
                let out = e
                    .encode(mode)
                    .map_err(|_| DecodeFinding::EncodeFailed { format, input: raw })?;
                round_trip(format, raw, out)?;
                let rawv = IrteRaw::from_u128(raw);
                if e.present() != rawv.present()
                    || e.fpd() != rawv.fpd()
                    || matches!(e, Irte::Posted(_)) != im
                {
                    return Err(DecodeFinding::Inconsistent {
                        format,
                        check: "IrteRaw accessors disagree with the decoded entry",
                        input: raw,
                    });
                }
                let (svt, sq, sid) = match e {
                    Irte::Remapped(x) => (x.svt, x.sq, x.sid),
                    Irte::Posted(x) => (x.svt, x.sq, x.sid),
                };
                if e.sid_matches(rid) != sid_matches(svt, sq, sid, rid) {
                    return Err(DecodeFinding::Inconsistent {
                        format,
                        check: "Irte::sid_matches != sid_matches",
                        input: raw,
                    });
                }
                let _ = e.vector();
            }
            Err(err) => {
                r.saw(false);
                show(&err);
                let _ = err.fault_reason();
            }
        }
        // Decoding as one format regardless of IM: IM is not looked at, so the re-encoding
        // differs at most in bit 15.
        if let Ok(e) = RemappedIrte::decode(raw, mode) {
            let out = e.encode(mode).map_err(|_| DecodeFinding::EncodeFailed {
                format: Format::RemappedIrte(mode),
                input: raw,
            })?;
            round_trip(Format::RemappedIrte(mode), raw & !(1 << 15), out)?;
        }
    }
    if let Ok(e) = PostedIrte::decode(raw) {
        let out = e.encode().map_err(|_| DecodeFinding::EncodeFailed {
            format: Format::PostedIrte,
            input: raw,
        })?;
        round_trip(Format::PostedIrte, raw | (1 << 15), out)?;
    }
    let rawv = IrteRaw::from_u128(raw);
    if IrteRaw::from_le_bytes(rawv.to_le_bytes()) != rawv || rawv.to_u128() != raw {
        return Err(DecodeFinding::Inconsistent {
            format: Format::VtdIrte(ApicMode::X2Apic),
            check: "IrteRaw byte round trip",
            input: raw,
        });
    }
    Ok(())
}

fn posted_descriptor(bytes: &[u8; 64], r: &mut DecodeReport) -> Result<(), DecodeFinding> {
    let format = Format::PostedDescriptor;
    if PostedDescriptor::from_bytes(&bytes[..63]).is_ok() {
        return Err(DecodeFinding::WrongLengthAccepted { format, len: 63 });
    }
    match PostedDescriptor::from_bytes(bytes) {
        Ok(mut d) => {
            r.saw(true);
            if d.to_bytes() != *bytes {
                return Err(DecodeFinding::RoundTrip {
                    format,
                    input: u128::from_le_bytes(bytes[..16].try_into().unwrap_or([0; 16])),
                    output: 0,
                });
            }
            for mode in [ApicMode::XApic, ApicMode::X2Apic] {
                if let Err(e) = d.validate(mode) {
                    show(&e);
                }
                let id = d.ndst(mode);
                if d.validate(mode).is_ok() {
                    // A valid NDST re-set to its own id leaves the descriptor unchanged.
                    let mut e = d;
                    if e.set_ndst(mode, id).is_err() || e != d {
                        return Err(DecodeFinding::Inconsistent {
                            format,
                            check: "set_ndst(ndst()) changed a valid descriptor",
                            input: u128::from(d.ndst_raw()),
                        });
                    }
                }
            }
            let pir = d.pir();
            let _ = (pir.highest(), pir.vectors().count(), d.on(), d.sn(), d.nv());
            let taken = d.take_pir();
            if taken != pir || !d.pir().is_empty() {
                return Err(DecodeFinding::Inconsistent {
                    format,
                    check: "take_pir",
                    input: 0,
                });
            }
        }
        Err(e) => {
            r.saw(false);
            show(&e);
        }
    }
    Ok(())
}

/// The `decode_hw` body: one input is read as an MSI message (compatibility, VT-d remappable,
/// AMD-Vi), a VT-d IRTE (both ApicModes, both formats), a requester id for the source check, a
/// posted-interrupt descriptor, AMD-Vi 32- and 128-bit IRTEs, an IRTA value and a fault reason.
pub fn decode_hw(data: &[u8]) -> Result<DecodeReport, DecodeFinding> {
    let mut r = DecodeReport::default();
    let mut input = Input::new(data);
    let msg = MsiMessage::new(input.u32(), input.u32(), input.u32());
    msi(msg, &mut r)?;
    let raw = input.u128();
    let rid = input.u16();
    vtd_irte(raw, rid, &mut r)?;
    let pd = input.array::<64>();
    posted_descriptor(&pd, &mut r)?;

    let a32 = input.u32();
    match AmdIrte32Entry::decode(a32) {
        Ok(e) => {
            r.saw(true);
            let out = e.encode().map_err(|_| DecodeFinding::EncodeFailed {
                format: Format::AmdIrte32,
                input: u128::from(a32),
            })?;
            round_trip(Format::AmdIrte32, u128::from(a32), u128::from(out))?;
        }
        Err(e) => {
            r.saw(false);
            show(&e);
        }
    }
    let a128 = input.u128();
    match AmdIrte128::decode(a128) {
        Ok(e) => {
            r.saw(true);
            let out = e.encode().map_err(|_| DecodeFinding::EncodeFailed {
                format: Format::AmdIrte128,
                input: a128,
            })?;
            round_trip(Format::AmdIrte128, a128, out)?;
            let _ = (e.remap_en(), e.destination(), e.vector());
        }
        Err(e) => {
            r.saw(false);
            show(&e);
        }
    }
    let irta = input.u64();
    match Irta::decode(irta) {
        Ok(i) => {
            r.saw(true);
            let out = i.encode().map_err(|_| DecodeFinding::EncodeFailed {
                format: Format::Irta,
                input: u128::from(irta),
            })?;
            round_trip(Format::Irta, u128::from(irta), u128::from(out))?;
            let _ = (i.entries(), i.apic_mode());
        }
        Err(e) => {
            r.saw(false);
            show(&e);
        }
    }
    let reason = VtdFaultReason(input.u8());
    show(&reason);
    let sq = input.u8();
    let _ = (sq_mask(sq), Svt::from_bits(sq).bits());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Encoder;

    #[test]
    fn every_wire_structure_decodes_from_its_own_length() {
        let r = decode_wire(&[0u8; 64]).unwrap();
        assert_eq!(
            r.attempted, 15,
            "13 structures, the info leaf, the guest's discovery"
        );
        assert_eq!(
            r.decoded, 13,
            "an all-zero info leaf has min_version 0; bare metal"
        );
    }

    #[test]
    fn short_input_decodes_only_the_structures_it_covers() {
        // 8 bytes: AllocateResponse, Target, DeactivateRequest and FreeRequest.
        let r = decode_wire(&[1u8; 8]).unwrap();
        assert_eq!(r.decoded, 4);
    }

    #[test]
    fn a_valid_info_leaf_round_trips() {
        // VIR-DISC-H-002 shaped leaf: versions 1..=1, VMCALL + doorbell, port 0x5650.
        let bytes = Encoder::new()
            .u64(0x5649_0011)
            .u32(0)
            .u32(0x0001_0001)
            .u32(0b101)
            .u32(0xabcd_5650)
            .u32(0xffff_ffff)
            .u32(0x4000_0100)
            .u64(0) // up to 40 bytes, the size of QueryResponse
            .finish();
        let r = decode_wire(&bytes).unwrap();
        assert_eq!(
            (r.attempted, r.decoded),
            (15, 14),
            "every structure and the leaf; bare metal for the guest (ECX[31] clear)"
        );
    }

    #[test]
    fn the_guest_finds_vir_only_behind_a_qualifying_base_leaf() {
        // VIR-DISC-G-001/002, VIR-CALL-G-003: hypervisor bit, base 0x4000_0100 with the
        // signature, info leaf 1..=1 with the doorbell at 0x5650; a grant of 0x5654..0x5658
        // would cover doorbell ports and is refused.
        let [sb, sc, sd] = vir_abi::discovery::signature_regs();
        let mut e = Encoder::new();
        e.bytes(&[0u8; 32]); // RAX, status, registers, base: all zero
        e.u32(1 << 31).u8(1);
        e.u32(0x4000_0101).u32(sb).u32(sc).u32(sd);
        e.u32(0x0001_0001).u32(0b101).u32(0x5650).u32(0);
        e.u16(0x5654).u32(4);
        let r = decode_wire(&e.finish()).unwrap();
        assert_eq!((r.attempted, r.decoded), (15, 14));
        // The same with EAX short of the info leaf: no vIR, no finding.
        let mut e = Encoder::new();
        e.bytes(&[0u8; 32]); // RAX, status, registers, base: all zero
        e.u32(1 << 31).u8(1);
        e.u32(0x4000_0100).u32(sb).u32(sc).u32(sd);
        let r = decode_wire(&e.finish()).unwrap();
        assert_eq!((r.attempted, r.decoded), (15, 13));
    }

    #[test]
    fn hardware_formats_round_trip_for_valid_values() {
        let mut enc = Encoder::new();
        // A VT-d remappable message with handle 0x1234 (VIR-FMT-H-001 example) ...
        enc.u32(0xFEE2_4698).u32(0).u32(0);
        // ... a present posted IRTE, SVT=1, SID 0x3a00 ...
        let irte = PostedIrte {
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
        .unwrap();
        enc.u128(irte).u16(0x3a00);
        enc.bytes(&[0u8; 64]);
        enc.u32(0x0041_0201)
            .u128(1)
            .u64(0x1234_5000 | 1 << 11 | 0xf);
        let r = decode_hw(&enc.finish()).unwrap();
        // compat x2 (fail: remappable), remappable, AMD (fail), IRTE x2 modes, descriptor,
        // AMD32, AMD128, IRTA.
        assert_eq!(r.attempted, 10);
        assert_eq!(r.decoded, 7);
    }
}
