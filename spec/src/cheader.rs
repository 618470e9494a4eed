//! The C header `abi/include/vir_abi.h` and the C layout checks `spec/c/check_layout.h`.
//!
//! [`generate_header`] writes a C11 header with every number of the abi: call codes and buffer
//! lengths, the register and doorbell bindings, discovery (CPUID) constants, statuses with a
//! status → errno function, features, storage kinds, message formats, `ACTIVATE` flags, every
//! wire structure (`struct vir_…`, field comments from the abi's descriptors) and the hardware
//! formats behind the messages as `_SHIFT`/`_MASK` pairs.
//!
//! The wire structures use plain `uint16_t`/`uint32_t`/`uint64_t` fields, no packing pragma:
//! the generator checks ([`HeaderError::Misaligned`]) that every field sits at a multiple of its
//! natural alignment and every size is a multiple of the structure's alignment, so C's natural
//! layout is the wire layout; the header `VIR_STATIC_ASSERT`s each size and offset so that a C
//! compiler proves it again. Fields are little-endian, so the header refuses big-endian targets.
//!
//! The hardware formats' masks are taken from the abi's `bitfield-struct` layout types
//! (`RemappedIrteBits`, `CompatAddress`, …): for each field, the field's all-ones value is read
//! from an all-ones word with the getter and written into a zero word with the setter, which
//! yields the field's mask in place; shift and width follow from it. 128-bit entries are
//! described as two little-endian 64-bit words, `LO` (bits 63:0) and `HI` (bits 127:64). Where
//! the abi keeps a bit private (posted-descriptor ON/SN, AMD-Vi MSI address bit 2, CPUID info
//! leaf fields) the mask is found by encoding a value with only that field set through the
//! abi's encoder.

use std::fmt::{self, Write as _};

use vir_abi::call::{self, CallCode};
use vir_abi::discovery::{self, InfoLeaf, binding};
use vir_abi::feature::Features;
use vir_abi::hw::amd::{
    AmdIrte128GuestBits, AmdIrte128RemapBits, INT_TYPE_ARBITRATED, INT_TYPE_FIXED,
};
use vir_abi::hw::msi::{self as hwmsi, CompatAddress, CompatData, DeliveryMode};
use vir_abi::hw::posted::PostedDescriptor;
use vir_abi::hw::vtd::{self, IrtaBits, PostedIrteBits, RemappableAddress, RemappedIrteBits};
use vir_abi::hw::{
    AmdIrte32, AmdMsi, FieldDesc, Irta, MSI_ADDRESS_BASE, MSI_ADDRESS_BASE_MASK, Svt,
    VtdFaultReason,
};
use vir_abi::layout::{FieldType, StructDesc};
use vir_abi::status::Status;
use vir_abi::wire::{self, ALL_STRUCTS, CALL_LAYOUTS, MessageFormat, StorageKind};

use crate::tables::{doc_cell, struct_by_c_name};

/// Why the header cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A field's offset is not a multiple of its natural C alignment, or a structure's size is
    /// not a multiple of its alignment: natural C layout would differ from the wire layout.
    Misaligned {
        /// The structure.
        strukt: &'static str,
        /// The field (`None` for the structure's size).
        field: Option<&'static str>,
        /// The offset (or size).
        offset: usize,
        /// The alignment C would require.
        align: usize,
    },
    /// A field's type is a structure not defined before it (or not in `ALL_STRUCTS`).
    NestedNotDefined {
        /// The structure.
        strukt: &'static str,
        /// The field.
        field: &'static str,
        /// The nested structure's C name.
        nested: &'static str,
    },
    /// A hardware field's mask is not one contiguous run of bits.
    NonContiguousMask {
        /// The format's macro prefix.
        format: &'static str,
        /// The field.
        field: String,
        /// The mask.
        mask: u128,
    },
    /// A field of a 128-bit format spans both 64-bit words.
    SpansWords {
        /// The format's macro prefix.
        format: &'static str,
        /// The field.
        field: String,
        /// The mask.
        mask: u128,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned {
                strukt,
                field: Some(field),
                offset,
                align,
            } => write!(
                f,
                "{strukt}.{field} at offset {offset} is not {align}-byte aligned: C layout would differ"
            ),
            Self::Misaligned {
                strukt,
                field: None,
                offset,
                align,
            } => write!(
                f,
                "{strukt} size {offset} is not a multiple of its alignment {align}: C layout would differ"
            ),
            Self::NestedNotDefined {
                strukt,
                field,
                nested,
            } => write!(
                f,
                "{strukt}.{field} has type struct {nested}, which is not defined before it"
            ),
            Self::NonContiguousMask {
                format,
                field,
                mask,
            } => write!(f, "{format} field {field} mask {mask:#x} is not contiguous"),
            Self::SpansWords {
                format,
                field,
                mask,
            } => write!(
                f,
                "{format} field {field} mask {mask:#x} spans both 64-bit words"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The natural C alignment of a field type.
fn c_align(ty: FieldType) -> usize {
    match ty {
        FieldType::U8 | FieldType::Bytes(_) => 1,
        FieldType::U16 => 2,
        FieldType::U32 => 4,
        FieldType::U64 => 8,
        FieldType::Struct(c) => struct_by_c_name(c).map_or(1, struct_align),
    }
}

/// The natural C alignment of a wire structure (the largest of its fields').
pub fn struct_align(desc: &StructDesc) -> usize {
    desc.fields.iter().map(|f| c_align(f.ty)).max().unwrap_or(1)
}

/// Check that natural C layout of `desc` equals its wire layout.
pub fn check_natural_layout(desc: &'static StructDesc) -> Result<(), HeaderError> {
    for f in desc.fields {
        let align = c_align(f.ty);
        if !f.offset.is_multiple_of(align) {
            return Err(HeaderError::Misaligned {
                strukt: desc.name,
                field: Some(f.name),
                offset: f.offset,
                align,
            });
        }
    }
    let align = struct_align(desc);
    if !desc.size.is_multiple_of(align) {
        return Err(HeaderError::Misaligned {
            strukt: desc.name,
            field: None,
            offset: desc.size,
            align,
        });
    }
    Ok(())
}

/// `CamelCase` → `CAMEL_CASE`.
fn upper_snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// One line of C comment text: white space collapsed, ASCII only, no comment terminator.
fn c_comment(s: &str) -> String {
    let mut out = String::new();
    for c in doc_cell(s).replace("\\|", "|").replace("*/", "* /").chars() {
        match c {
            '\u{2013}' | '\u{2014}' => out.push('-'),
            '\u{2260}' => out.push_str("!="),
            '\u{2264}' => out.push_str("<="),
            '\u{2265}' => out.push_str(">="),
            '\u{2192}' => out.push_str("->"),
            '\u{2026}' => out.push_str("..."),
            c if c.is_ascii() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// One field of a hardware format: its name and its mask in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitField {
    /// Upper-case field name used in the macro names.
    pub name: String,
    /// The field's bits.
    pub mask: u128,
}

impl BitField {
    /// Lowest bit of the field.
    pub fn shift(&self) -> u32 {
        self.mask.trailing_zeros()
    }

    /// Number of bits.
    pub fn width(&self) -> u32 {
        self.mask.count_ones()
    }

    /// Highest bit of the field.
    pub fn high_bit(&self) -> u32 {
        127 - self.mask.leading_zeros()
    }
}

/// A hardware register or table-entry format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitFormat {
    /// Macro prefix (`VIR_VTD_IRTE_REMAPPED`).
    pub prefix: &'static str,
    /// Width in bits: 32, 64 or 128.
    pub bits: u32,
    /// One-line description.
    pub title: &'static str,
    /// The named fields.
    pub fields: Vec<BitField>,
    /// Bits that must be zero (`0` if the abi defines no reserved mask for the format).
    pub reserved: u128,
}

/// The mask of each named field of a `bitfield-struct` layout type, read through its public
/// getters and setters (see the module documentation).
macro_rules! bitfields {
    ($t:ty, $from:ident, $to:ident, $all:expr; $($name:literal => $get:ident / $with:ident),* $(,)?) => {
        vec![$(BitField {
            name: $name.to_string(),
            mask: u128::from(<$t>::new().$with(<$t>::$from($all).$get()).$to()),
        }),*]
    };
}

/// The fields of a format from its abi field descriptors (`FIELDS`): the macro name is the
/// descriptor's name in upper case, the mask its bit range.
fn from_descs(fields: &[FieldDesc]) -> Vec<BitField> {
    fields
        .iter()
        .map(|d| BitField {
            name: d.name.to_ascii_uppercase(),
            mask: d.mask(),
        })
        .collect()
}

/// The mask of a 16-bit notification flag of the posted descriptor, found through its setter.
fn pi_flag(set: fn(&mut PostedDescriptor, bool)) -> u16 {
    let mut d = PostedDescriptor::new();
    set(&mut d, true);
    d.notifications.get()
}

/// The CPUID info-leaf register masks, found by encoding leaves with one field at its maximum.
fn info_leaf_fields() -> (Vec<BitField>, Vec<BitField>) {
    let zero = InfoLeaf {
        min_version: 0,
        max_version: 0,
        bindings: 0,
        doorbell_port: 0,
    };
    let min = InfoLeaf {
        min_version: u16::MAX,
        ..zero
    }
    .encode();
    let max = InfoLeaf {
        max_version: u16::MAX,
        ..zero
    }
    .encode();
    let port = InfoLeaf {
        doorbell_port: u16::MAX,
        ..zero
    }
    .encode();
    (
        vec![
            BitField {
                name: "MIN_VERSION".to_string(),
                mask: u128::from(min[0]),
            },
            BitField {
                name: "MAX_VERSION".to_string(),
                mask: u128::from(max[0]),
            },
        ],
        vec![BitField {
            name: "DOORBELL_PORT".to_string(),
            mask: u128::from(port[2]),
        }],
    )
}

/// Every hardware format the header describes.
pub fn hw_formats() -> Vec<BitFormat> {
    let (eax, ecx) = info_leaf_fields();
    let amd_dm = AmdMsi {
        index: 0,
        address_dm: true,
    }
    .encode()
    .map_or(0, |m| m.address_lo & !MSI_ADDRESS_BASE);
    vec![
        BitFormat {
            prefix: "VIR_CPUID_INFO_EAX",
            bits: 32,
            title: "CPUID info leaf (base + 1), EAX: offered version range",
            fields: eax,
            reserved: 0,
        },
        BitFormat {
            prefix: "VIR_CPUID_INFO_ECX",
            bits: 32,
            title: "CPUID info leaf (base + 1), ECX: doorbell port base (bits 31:16 reserved)",
            fields: ecx,
            reserved: 0,
        },
        BitFormat {
            prefix: "VIR_MSI_ADDR",
            bits: 32,
            title: "x86 MSI address (low 32 bits), compatibility format",
            fields: from_descs(CompatAddress::FIELDS),
            reserved: u128::from(CompatAddress::RESERVED_MASK),
        },
        BitFormat {
            prefix: "VIR_MSI_DATA",
            bits: 32,
            title: "x86 MSI data, compatibility format",
            fields: from_descs(CompatData::FIELDS),
            reserved: u128::from(CompatData::RESERVED_MASK),
        },
        BitFormat {
            prefix: "VIR_VTD_MSI_ADDR",
            bits: 32,
            title: "VT-d remappable-format MSI address (low 32 bits; high 32 bits are 0)",
            fields: bitfields!(RemappableAddress, from_u32, to_u32, u32::MAX;
                "HANDLE_15" => handle_15 / with_handle_15,
                "SHV" => shv / with_shv,
                "REMAPPABLE" => remappable / with_remappable,
                "HANDLE_14_0" => handle_14_0 / with_handle_14_0,
                "BASE" => base / with_base,
            ),
            reserved: 0,
        },
        BitFormat {
            prefix: "VIR_VTD_IRTE_REMAPPED",
            bits: 128,
            title: "VT-d IRTE, remapped format (IM = 0)",
            fields: from_descs(RemappedIrteBits::FIELDS),
            reserved: RemappedIrteBits::RESERVED_MASK,
        },
        BitFormat {
            prefix: "VIR_VTD_IRTE_POSTED",
            bits: 128,
            title: "VT-d IRTE, posted format (IM = 1)",
            fields: from_descs(PostedIrteBits::FIELDS),
            reserved: PostedIrteBits::RESERVED_MASK,
        },
        BitFormat {
            prefix: "VIR_VTD_IRTA",
            bits: 64,
            title: "VT-d IRTA register (interrupt remapping table address)",
            fields: bitfields!(IrtaBits, from_u64, to_u64, u64::MAX;
                "SIZE" => size / with_size,
                "EIME" => eime / with_eime,
                "BASE_PAGE" => base_page / with_base_page,
            ),
            reserved: u128::from(IrtaBits::RESERVED_MASK),
        },
        BitFormat {
            prefix: "VIR_PI_DESC_NOTIFICATIONS",
            bits: 16,
            title: "posted-interrupt descriptor, 16-bit notifications field (descriptor bits 271:256)",
            fields: vec![
                BitField {
                    name: "ON".to_string(),
                    mask: u128::from(pi_flag(PostedDescriptor::set_on)),
                },
                BitField {
                    name: "SN".to_string(),
                    mask: u128::from(pi_flag(PostedDescriptor::set_sn)),
                },
            ],
            reserved: u128::from(
                !(pi_flag(PostedDescriptor::set_on) | pi_flag(PostedDescriptor::set_sn)),
            ),
        },
        BitFormat {
            prefix: "VIR_AMD_MSI_ADDR",
            bits: 32,
            title: "AMD-Vi remapped MSI address (low 32 bits; high 32 bits are 0)",
            fields: vec![BitField {
                name: "DM".to_string(),
                mask: u128::from(amd_dm),
            }],
            reserved: 0,
        },
        BitFormat {
            prefix: "VIR_AMD_MSI_DATA",
            bits: 32,
            title: "AMD-Vi remapped MSI data",
            fields: vec![BitField {
                name: "INDEX".to_string(),
                mask: u128::from(AmdMsi::DATA_INDEX_MASK),
            }],
            reserved: u128::from(!AmdMsi::DATA_INDEX_MASK),
        },
        BitFormat {
            prefix: "VIR_AMD_IRTE32",
            bits: 32,
            title: "AMD-Vi 32-bit IRTE",
            fields: from_descs(AmdIrte32::FIELDS),
            reserved: u128::from(AmdIrte32::RESERVED_MASK),
        },
        BitFormat {
            prefix: "VIR_AMD_IRTE128_REMAP",
            bits: 128,
            title: "AMD-Vi 128-bit IRTE, remapped mode (GuestMode = 0)",
            fields: from_descs(AmdIrte128RemapBits::FIELDS),
            reserved: AmdIrte128RemapBits::RESERVED_MASK,
        },
        BitFormat {
            prefix: "VIR_AMD_IRTE128_GUEST",
            bits: 128,
            title: "AMD-Vi 128-bit IRTE, guest virtual APIC mode (GuestMode = 1)",
            fields: from_descs(AmdIrte128GuestBits::FIELDS),
            reserved: AmdIrte128GuestBits::RESERVED_MASK,
        },
    ]
}

/// A C integer literal for `v` in a `bits`-wide word.
fn c_literal(v: u128, bits: u32) -> String {
    match bits {
        64 => format!("VIR_U64_C({v:#018x})"),
        16 => format!("{v:#06x}u"),
        _ => format!("VIR_U32_C({v:#010x})"),
    }
}

/// Text accumulator for `#define`s with aligned values.
struct Defines {
    rows: Vec<(String, String, String)>,
}

impl Defines {
    fn new() -> Self {
        Defines { rows: Vec::new() }
    }

    fn add(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        comment: impl Into<String>,
    ) {
        self.rows.push((name.into(), value.into(), comment.into()));
    }

    fn render(self, out: &mut String) {
        let width = self.rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (name, value, comment) in self.rows {
            let _ = if comment.is_empty() {
                writeln!(out, "#define {name:<width$} {value}")
            } else {
                writeln!(
                    out,
                    "#define {name:<width$} {value} /* {} */",
                    c_comment(&comment)
                )
            };
        }
        out.push('\n');
    }
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "/* ---------------------------------------------------------------------------------------------\n * {title}\n * ------------------------------------------------------------------------------------------- */\n"
    );
}

fn hw_format_defines(out: &mut String, f: &BitFormat) -> Result<(), HeaderError> {
    let _ = writeln!(out, "/* {}. */", c_comment(f.title));
    let mut d = Defines::new();
    let words: &[(&str, u32)] = if f.bits == 128 {
        &[("_LO", 0), ("_HI", 64)]
    } else {
        &[("", 0)]
    };
    let word_bits = f.bits.min(64);
    for &(suffix, base) in words {
        for field in &f.fields {
            let low = field.shift();
            if field.width() != field.high_bit() - low + 1 {
                return Err(HeaderError::NonContiguousMask {
                    format: f.prefix,
                    field: field.name.clone(),
                    mask: field.mask,
                });
            }
            if f.bits == 128 && (low < 64) != (field.high_bit() < 64) {
                return Err(HeaderError::SpansWords {
                    format: f.prefix,
                    field: field.name.clone(),
                    mask: field.mask,
                });
            }
            if low < base || low >= base + word_bits {
                continue;
            }
            let bits = if field.width() == 1 {
                format!("bit {}", field.shift())
            } else {
                format!("bits {}:{}", field.high_bit(), field.shift())
            };
            d.add(
                format!("{}{suffix}_{}_SHIFT", f.prefix, field.name),
                (low - base).to_string(),
                bits,
            );
            d.add(
                format!("{}{suffix}_{}_MASK", f.prefix, field.name),
                c_literal(field.mask >> base, word_bits),
                "",
            );
        }
        if f.reserved != 0 {
            let word_mask = if word_bits == 128 {
                u128::MAX
            } else {
                (1u128 << word_bits) - 1
            };
            d.add(
                format!("{}{suffix}_RESERVED_MASK", f.prefix),
                c_literal((f.reserved >> base) & word_mask, word_bits),
                "must be zero",
            );
        }
    }
    d.render(out);
    Ok(())
}

fn c_field_decl(f: &vir_abi::layout::Field) -> String {
    match f.ty {
        FieldType::Bytes(n) => format!("uint8_t {}[{n}];", f.name),
        FieldType::Struct(c) => format!("struct {c} {};", f.name),
        other => format!("{} {};", other.c_name(), f.name),
    }
}

fn wire_struct(
    out: &mut String,
    desc: &'static StructDesc,
    defined: &[&str],
) -> Result<(), HeaderError> {
    check_natural_layout(desc)?;
    for f in desc.fields {
        if let FieldType::Struct(c) = f.ty
            && !defined.contains(&c)
        {
            return Err(HeaderError::NestedNotDefined {
                strukt: desc.name,
                field: f.name,
                nested: c,
            });
        }
    }
    let _ = writeln!(
        out,
        "/* {} ({} bytes): {} */",
        desc.name,
        desc.size,
        c_comment(desc.doc)
    );
    let _ = writeln!(out, "struct {} {{", desc.c_name);
    let decls: Vec<String> = desc.fields.iter().map(c_field_decl).collect();
    let width = decls.iter().map(String::len).max().unwrap_or(0);
    for (f, decl) in desc.fields.iter().zip(&decls) {
        let _ = writeln!(
            out,
            "\t{decl:<width$} /* {:2}: {} */",
            f.offset,
            c_comment(f.doc)
        );
    }
    out.push_str("};\n");
    let _ = writeln!(
        out,
        "VIR_STATIC_ASSERT(sizeof(struct {0}) == {1}, \"struct {0} is {1} bytes\");",
        desc.c_name, desc.size
    );
    for f in desc.fields {
        let _ = writeln!(
            out,
            "VIR_STATIC_ASSERT(offsetof(struct {0}, {1}) == {2}, \"{0}.{1} at offset {2}\");",
            desc.c_name, f.name, f.offset
        );
    }
    out.push('\n');
    Ok(())
}

const PREAMBLE: &str = "\
/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * vir_abi.h - the vIR version 1 wire ABI for C (C11, C++11 and later, Linux kernel).
 *
 * GENERATED by the vir-spec crate from the vir-abi crate; do not edit. Change vir-abi, then run
 *     VIR_BLESS=1 cargo test -p vir-spec
 * and commit the result. The specification is spec/vir-v1.md.
 *
 * Byte order: every multi-byte field of every structure and hardware format in this header is
 * little-endian. The structures use plain uint16_t/uint32_t/uint64_t fields, so the header
 * targets little-endian machines only (the version 1 binding is x86) and refuses to compile for
 * a big-endian target.
 *
 * Layout: no packing pragma is used. Every field sits at an offset that is a multiple of its
 * natural alignment and every structure's size is a multiple of its alignment, so natural C
 * layout is the wire layout; the VIR_STATIC_ASSERTs after each structure prove it. Buffers are
 * VIR_BUFFER_ALIGN-byte aligned, which satisfies every structure's alignment.
 *
 * Hardware formats are given as <FORMAT>_<FIELD>_SHIFT (lowest bit) and <FORMAT>_<FIELD>_MASK
 * (the field's bits in place). 128-bit table entries are two little-endian 64-bit words:
 * _LO_ names bits 63:0 (the word at byte offset 0), _HI_ names bits 127:64 (byte offset 8).
 */
#ifndef VIR_ABI_H
#define VIR_ABI_H

#if defined(__KERNEL__)
/* Linux kernel: no libc headers. uint{8,16,32,64}_t come from <linux/types.h>. */
#include <linux/types.h>
#include <linux/stddef.h>
#elif defined(__cplusplus)
#include <cstddef>
#include <cstdint>
#else
#include <stddef.h>
#include <stdint.h>
#endif

/*
 * Portability: the header is C11, C++11 or later, and Linux kernel C (gnu11) unchanged. It uses
 * its own constant macros (the kernel has no UINT32_C) and spells static assertions and
 * alignment the way each language does.
 */
#define VIR_U32_C(v) (v##U)
#define VIR_U64_C(v) (v##ULL)
#if defined(__cplusplus)
#define VIR_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#define VIR_ALIGNAS(n) alignas(n)
#define VIR_ALIGNOF(t) alignof(t)
#else
#define VIR_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#define VIR_ALIGNAS(n) _Alignas(n)
#define VIR_ALIGNOF(t) _Alignof(t)
#endif

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \\
\t__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error \"vir_abi.h: vIR wire structures are little-endian; big-endian targets are not supported\"
#endif

";

/// Generate `vir_abi.h`.
pub fn generate_header() -> Result<String, HeaderError> {
    let mut out = String::from(PREAMBLE);

    section(&mut out, "Version, calls and bindings");
    let mut d = Defines::new();
    d.add(
        "VIR_VERSION_1",
        format!("{}u", vir_abi::VIR_VERSION_1),
        "the interface version this header describes",
    );
    for &c in CallCode::V1 {
        let name = c.name().unwrap_or("?");
        d.add(format!("VIR_CALL_{name}"), format!("{:#06x}u", c.0), "");
    }
    d.add(
        "VIR_CALL_RESERVED_EXTENSIONS_FIRST",
        format!("{:#06x}u", CallCode::RESERVED_EXTENSIONS_FIRST),
        "first code reserved for planned extensions (UNKNOWN_CALL in version 1)",
    );
    d.add(
        "VIR_CALL_RESERVED_EXTENSIONS_LAST",
        format!("{:#06x}u", CallCode::RESERVED_EXTENSIONS_LAST),
        "last code reserved for planned extensions",
    );
    d.add(
        "VIR_CALL_VENDOR_FIRST",
        format!("{:#06x}u", CallCode::VENDOR_FIRST),
        "first vendor-specific code",
    );
    d.render(&mut out);

    let mut d = Defines::new();
    for l in CALL_LAYOUTS {
        let name = l.code.name().unwrap_or("?");
        d.add(
            format!("VIR_CALL_{name}_REQUEST_LEN"),
            format!("{}u", l.request_len()),
            "",
        );
        d.add(
            format!("VIR_CALL_{name}_RESPONSE_LEN"),
            format!("{}u", l.response_len()),
            "",
        );
    }
    d.render(&mut out);

    let mut d = Defines::new();
    d.add(
        "VIR_HYPERCALL_BASE",
        format!("VIR_U64_C({:#010x})", call::HYPERCALL_BASE),
        "register binding: RAX = VIR_HYPERCALL_BASE | call code",
    );
    d.add(
        "VIR_HYPERCALL_CODE_MASK",
        format!("VIR_U64_C({:#06x})", call::HYPERCALL_CODE_MASK),
        "register binding: call code bits of RAX",
    );
    d.add(
        "VIR_PAGE_SIZE",
        format!("{}u", call::PAGE_SIZE),
        "buffers must not cross a page of this size",
    );
    d.add(
        "VIR_BUFFER_ALIGN",
        format!("{}u", call::BUFFER_ALIGN),
        "alignment of request, response and doorbell buffers",
    );
    d.add(
        "VIR_MAX_BUFFER_LEN",
        format!("{}u", call::MAX_BUFFER_LEN),
        "largest request or response",
    );
    d.add(
        "VIR_DOORBELL_GPA_LO",
        format!("{}u", call::DOORBELL_GPA_LO),
        "doorbell binding: port offset taking GPA bits 31:0",
    );
    d.add(
        "VIR_DOORBELL_GPA_HI",
        format!("{}u", call::DOORBELL_GPA_HI),
        "doorbell binding: port offset taking GPA bits 63:32; writing it rings",
    );
    d.add(
        "VIR_DOORBELL_PORT_COUNT",
        format!("{}u", call::DOORBELL_PORT_COUNT),
        "doorbell binding: consecutive ports claimed",
    );
    d.render(&mut out);

    section(&mut out, "Discovery (x86 CPUID)");
    let mut d = Defines::new();
    d.add(
        "VIR_CPUID_RANGE_FIRST",
        format!("VIR_U32_C({:#010x})", discovery::CPUID_RANGE_FIRST),
        "first candidate base leaf",
    );
    d.add(
        "VIR_CPUID_STRIDE",
        format!("VIR_U32_C({:#x})", discovery::CPUID_STRIDE),
        "distance between candidate bases",
    );
    d.add(
        "VIR_CPUID_BASES",
        format!("{}u", discovery::CPUID_BASES),
        "number of candidate bases",
    );
    d.add(
        "VIR_CPUID_INFO_OFFSET",
        format!("{}u", discovery::CPUID_INFO_OFFSET),
        "info leaf = base + this",
    );
    d.add(
        "VIR_CPUID1_ECX_HYPERVISOR",
        format!("VIR_U32_C({:#010x})", discovery::CPUID1_ECX_HYPERVISOR),
        "CPUID.1:ECX bit set by hypervisors, never on bare metal",
    );
    let sig = String::from_utf8_lossy(&discovery::SIGNATURE).into_owned();
    d.add(
        "VIR_CPUID_SIGNATURE",
        format!("\"{sig}\""),
        "12 bytes in EBX, ECX, EDX of the base leaf",
    );
    let regs = discovery::signature_regs();
    for (name, v) in ["EBX", "ECX", "EDX"].iter().zip(regs) {
        d.add(
            format!("VIR_CPUID_SIGNATURE_{name}"),
            format!("VIR_U32_C({v:#010x})"),
            "",
        );
    }
    d.add(
        "VIR_BINDING_VMCALL",
        format!("VIR_U32_C({:#x})", binding::VMCALL),
        "info leaf EBX: register binding, Intel VMCALL",
    );
    d.add(
        "VIR_BINDING_VMMCALL",
        format!("VIR_U32_C({:#x})", binding::VMMCALL),
        "info leaf EBX: register binding, AMD VMMCALL",
    );
    d.add(
        "VIR_BINDING_PORT_DOORBELL",
        format!("VIR_U32_C({:#x})", binding::PORT_DOORBELL),
        "info leaf EBX: port-I/O doorbell binding",
    );
    d.add(
        "VIR_BINDING_V1_DEFINED",
        format!("VIR_U32_C({:#x})", binding::V1_DEFINED),
        "every binding version 1 defines",
    );
    d.render(&mut out);
    let formats = hw_formats();
    for f in formats.iter().filter(|f| f.prefix.starts_with("VIR_CPUID")) {
        hw_format_defines(&mut out, f)?;
    }

    section(&mut out, "Statuses");
    let mut d = Defines::new();
    for &s in Status::ALL {
        d.add(
            format!("VIR_STATUS_{}", s.name().unwrap_or("?")),
            format!("{}u", s.0),
            "",
        );
    }
    d.add(
        "VIR_STATUS_COUNT",
        format!("{}u", Status::ALL.len()),
        "statuses version 1 defines (values 0 to COUNT-1)",
    );
    d.render(&mut out);
    out.push_str(
        "/*\n * The errno (positive) a guest kernel returns to the original caller (request_irq,\n \
         * pci_alloc_irq_vectors, irq_set_affinity) for a status; 0 for SUCCESS, EIO for a status\n \
         * this header does not name. Values are Linux errno numbers.\n */\n",
    );
    out.push_str("static inline int vir_status_errno(uint32_t status)\n{\n\tswitch (status) {\n");
    for &s in Status::ALL {
        let errno_name = if s.errno() == 0 {
            "success"
        } else {
            s.errno_name()
        };
        let _ = writeln!(
            out,
            "\tcase VIR_STATUS_{}:\n\t\treturn {}; /* {errno_name} */",
            s.name().unwrap_or("?"),
            s.errno(),
        );
    }
    let unknown = Status(u32::MAX);
    let _ = writeln!(
        out,
        "\tdefault:\n\t\treturn {}; /* {} */\n\t}}\n}}\n",
        unknown.errno(),
        unknown.errno_name()
    );
    out.push_str("/* The name of a status (\"SUCCESS\", ...), NULL for a status this header does not name. */\n");
    out.push_str(
        "static inline const char *vir_status_name(uint32_t status)\n{\n\tswitch (status) {\n",
    );
    for &s in Status::ALL {
        let name = s.name().unwrap_or("?");
        let _ = writeln!(out, "\tcase VIR_STATUS_{name}:\n\t\treturn \"{name}\";");
    }
    out.push_str("\tdefault:\n\t\treturn NULL;\n\t}\n}\n\n");

    section(&mut out, "Features");
    let mut d = Defines::new();
    for (bit, name) in Features::V1_NAMES.iter().enumerate() {
        d.add(
            format!("VIR_F_{name}"),
            format!("(VIR_U64_C(1) << {bit})"),
            "",
        );
    }
    d.add(
        "VIR_F_V1_DEFINED",
        format!("VIR_U64_C({:#018x})", Features::V1_DEFINED.0),
        "every feature version 1 defines",
    );
    for (name, f) in crate::tables::PLANNED_FEATURES {
        d.add(
            format!("VIR_F_{name}"),
            format!("(VIR_U64_C(1) << {})", f.0.trailing_zeros()),
            "reserved for a planned extension; never offered in version 1",
        );
    }
    d.add(
        "VIR_F_VENDOR_MASK",
        format!("VIR_U64_C({:#018x})", Features::VENDOR_MASK.0),
        "vendor-specific bits; never assigned by the specification",
    );
    d.render(&mut out);

    section(
        &mut out,
        "Storage kinds, message formats, VM states, ACTIVATE flags, limits",
    );
    let mut d = Defines::new();
    for v in 0..=u8::MAX {
        if let Some(name) = StorageKind(v).name() {
            d.add(format!("VIR_STORAGE_{name}"), format!("{v}u"), "");
        }
    }
    for v in 0..=u8::MAX {
        if let Some(name) = MessageFormat(v).name() {
            d.add(format!("VIR_MESSAGE_FORMAT_{name}"), format!("{v}u"), "");
        }
    }
    d.add(
        "VIR_VM_STATE_LEGACY",
        format!("{}u", wire::vm_state::LEGACY),
        "",
    );
    d.add(
        "VIR_VM_STATE_NEGOTIATED",
        format!("{}u", wire::vm_state::NEGOTIATED),
        "",
    );
    d.add(
        "VIR_ACTIVATE_RESERVE",
        format!("{:#06x}u", wire::activate_flags::RESERVE),
        "ACTIVATE flag: reservation activation",
    );
    d.add(
        "VIR_ACTIVATE_FLAGS_V1_DEFINED",
        format!("{:#06x}u", wire::activate_flags::V1_DEFINED),
        "every ACTIVATE flag version 1 defines",
    );
    d.add(
        "VIR_TARGET_VECTOR_MIN",
        format!("{:#04x}u", wire::TARGET_VECTOR_MIN),
        "smallest vector a target may name",
    );
    d.add(
        "VIR_MSI_MAX_LOG2",
        format!("{}u", wire::MSI_MAX_LOG2),
        "largest MSI block is 2^this vectors",
    );
    d.add(
        "VIR_HANDLE_INVALID",
        format!("{}u", wire::HANDLE_INVALID),
        "handle value never issued",
    );
    d.render(&mut out);

    section(&mut out, "Wire structures (all fields little-endian)");
    let mut defined: Vec<&str> = Vec::new();
    for desc in ALL_STRUCTS {
        wire_struct(&mut out, desc, &defined)?;
        defined.push(desc.c_name);
    }

    section(&mut out, "Hardware formats behind the messages");
    let mut d = Defines::new();
    d.add(
        "VIR_MSI_ADDRESS_BASE",
        format!("VIR_U32_C({MSI_ADDRESS_BASE:#010x})"),
        "interrupt address window",
    );
    d.add(
        "VIR_MSI_ADDRESS_BASE_MASK",
        format!("VIR_U32_C({MSI_ADDRESS_BASE_MASK:#010x})"),
        "address bits that must equal those of VIR_MSI_ADDRESS_BASE",
    );
    d.add(
        "VIR_MSI_ADDRESS_HI_DEST_MASK",
        format!("VIR_U32_C({:#010x})", hwmsi::ADDRESS_HI_DEST_MASK),
        "x2APIC high-address form: address_hi bits 31:8 = APIC ID bits 31:8",
    );
    d.add(
        "VIR_MSI_ADDRESS_FORMAT_REMAPPABLE",
        format!("VIR_U32_C({:#010x})", hwmsi::ADDRESS_FORMAT_REMAPPABLE),
        "address bit 4: VT-d remappable format",
    );
    d.add(
        "VIR_MSI_MAX_DEST_ID",
        format!("{}u", hwmsi::MAX_DEST_ID),
        "compatibility format without extended destination ID",
    );
    d.add(
        "VIR_MSI_MAX_EXT_DEST_ID",
        format!("{}u", hwmsi::MAX_EXT_DEST_ID),
        "with the extended destination ID",
    );
    for v in 0..8u8 {
        if let Some(mode) = DeliveryMode::from_bits(v) {
            d.add(
                format!("VIR_MSI_DELIVERY_{}", upper_snake(&format!("{mode:?}"))),
                format!("{v}u"),
                "",
            );
        }
    }
    d.add(
        "VIR_VTD_SUBHANDLE_RESERVED_MASK",
        format!("VIR_U32_C({:#010x})", vtd::SUBHANDLE_RESERVED_MASK),
        "MSI data bits that must be 0 when SHV = 1",
    );
    for v in 0..4u8 {
        let svt = Svt::from_bits(v);
        d.add(
            format!("VIR_VTD_SVT_{}", upper_snake(&format!("{svt:?}"))),
            format!("{}u", svt.bits()),
            "",
        );
    }
    for sq in 0..4u8 {
        if let Some(mask) = vtd::sq_mask(sq) {
            d.add(
                format!("VIR_VTD_SQ{sq}_SID_MASK"),
                format!("VIR_U32_C({mask:#06x})"),
                format!("requester-id bits compared under SQ = {sq}"),
            );
        }
    }
    let reasons = [
        ("MALFORMED_REQUEST", VtdFaultReason::MALFORMED_REQUEST),
        ("INDEX_OUT_OF_RANGE", VtdFaultReason::INDEX_OUT_OF_RANGE),
        ("NOT_PRESENT", VtdFaultReason::NOT_PRESENT),
        ("TABLE_UNREADABLE", VtdFaultReason::TABLE_UNREADABLE),
        ("IRTE_RESERVED", VtdFaultReason::IRTE_RESERVED),
        ("COMPAT_BLOCKED", VtdFaultReason::COMPAT_BLOCKED),
        ("SID_CHECK_FAILED", VtdFaultReason::SID_CHECK_FAILED),
    ];
    for (name, r) in reasons {
        d.add(
            format!("VIR_VTD_FAULT_{name}"),
            format!("{:#04x}u", r.0),
            r.description().unwrap_or(""),
        );
    }
    d.add(
        "VIR_VTD_IRTE_SIZE",
        format!("{}u", vtd::IrteRaw::SIZE),
        "bytes per VT-d IRTE",
    );
    d.add(
        "VIR_VTD_IRTA_MAX_SIZE_S",
        format!("{}u", Irta::MAX_SIZE_S),
        "table has 2^(S+1) entries",
    );
    d.add(
        "VIR_PI_DESC_SIZE",
        format!("{}u", PostedDescriptor::SIZE),
        "posted-interrupt descriptor size",
    );
    d.add(
        "VIR_PI_DESC_ALIGN",
        format!("{}u", PostedDescriptor::ALIGN),
        "posted-interrupt descriptor alignment",
    );
    d.add(
        "VIR_AMD_MSI_ADDRESS",
        format!("VIR_U32_C({MSI_ADDRESS_BASE:#010x})"),
        "AMD-Vi remapped MSI address",
    );
    d.add(
        "VIR_AMD_MSI_MAX_INDEX",
        format!("{:#x}u", AmdMsi::MAX_INDEX),
        "largest AMD-Vi IRTE index",
    );
    d.add(
        "VIR_AMD_MSI_FIRST_DM_INDEX",
        format!("{:#x}u", AmdMsi::FIRST_DM_INDEX),
        "indices from here on need address bit 2 (DM) set",
    );
    d.add(
        "VIR_AMD_IRTE32_LINUX_ALLOCATED",
        format!(
            "VIR_U32_C({:#010x})",
            vir_abi::hw::amd::IRTE32_LINUX_ALLOCATED
        ),
        "Linux's allocated-not-programmed 32-bit IRTE (RemapEn = 0)",
    );
    d.add("VIR_AMD_INT_TYPE_FIXED", format!("{INT_TYPE_FIXED}u"), "");
    d.add(
        "VIR_AMD_INT_TYPE_ARBITRATED",
        format!("{INT_TYPE_ARBITRATED}u"),
        "",
    );
    d.render(&mut out);
    for f in formats
        .iter()
        .filter(|f| !f.prefix.starts_with("VIR_CPUID"))
    {
        hw_format_defines(&mut out, f)?;
    }

    out.push_str(&hw_structs());
    out.push_str("#endif /* VIR_ABI_H */\n");
    Ok(out)
}

/// C structures for the 128-bit IRTEs and the posted-interrupt descriptor.
fn hw_structs() -> String {
    use core::mem::offset_of;
    let mut out = String::new();
    out.push_str(
        "/* A 128-bit table entry (VT-d IRTE, AMD-Vi 128-bit IRTE) as two little-endian words. */\n\
         struct vir_irte128 {\n\tuint64_t lo; /* bits 63:0 */\n\tuint64_t hi; /* bits 127:64 */\n};\n",
    );
    let _ = writeln!(
        out,
        "VIR_STATIC_ASSERT(sizeof(struct vir_irte128) == {0}, \"struct vir_irte128 is {0} bytes\");\n",
        vtd::IrteRaw::SIZE
    );
    let fields = [
        (
            "VIR_ALIGNAS(64) uint64_t pir[4];",
            "pir",
            offset_of!(PostedDescriptor, pir),
            "PIR, one bit per vector",
        ),
        (
            "uint16_t notifications;",
            "notifications",
            offset_of!(PostedDescriptor, notifications),
            "ON, SN (VIR_PI_DESC_NOTIFICATIONS_*)",
        ),
        (
            "uint8_t nv;",
            "nv",
            offset_of!(PostedDescriptor, nv),
            "notification vector",
        ),
        (
            "uint8_t reserved_35;",
            "reserved_35",
            offset_of!(PostedDescriptor, reserved_35),
            "reserved, zero",
        ),
        (
            "uint32_t ndst;",
            "ndst",
            offset_of!(PostedDescriptor, ndst),
            "notification destination (xAPIC: APIC ID in bits 15:8)",
        ),
        (
            "uint8_t reserved_40[24];",
            "reserved_40",
            offset_of!(PostedDescriptor, reserved_40),
            "reserved, zero",
        ),
    ];
    out.push_str("/* The posted-interrupt descriptor (64 bytes, 64-byte aligned). */\nstruct vir_pi_desc {\n");
    let width = fields.iter().map(|f| f.0.len()).max().unwrap_or(0);
    for (decl, _, off, doc) in fields {
        let _ = writeln!(out, "\t{decl:<width$} /* {off:2}: {doc} */");
    }
    out.push_str("};\n");
    let _ = writeln!(
        out,
        "VIR_STATIC_ASSERT(sizeof(struct vir_pi_desc) == VIR_PI_DESC_SIZE, \"struct vir_pi_desc is {} bytes\");",
        PostedDescriptor::SIZE
    );
    let _ = writeln!(
        out,
        "VIR_STATIC_ASSERT(VIR_ALIGNOF(struct vir_pi_desc) == VIR_PI_DESC_ALIGN, \"struct vir_pi_desc is {}-byte aligned\");",
        PostedDescriptor::ALIGN
    );
    for (_, name, off, _) in fields {
        let _ = writeln!(
            out,
            "VIR_STATIC_ASSERT(offsetof(struct vir_pi_desc, {name}) == {off}, \"vir_pi_desc.{name} at offset {off}\");"
        );
    }
    out.push('\n');
    out
}

/// Generate `check_layout.h`: for every wire structure, its size and alignment bound, and for
/// every field its offset, its size, its element type (`_Generic`) and, for byte arrays, its
/// length — an independent restatement of the descriptors, checked by the C compiler against
/// the structures of `vir_abi.h`.
pub fn generate_check_layout() -> Result<String, HeaderError> {
    let mut out = String::new();
    out.push_str(
        "/* SPDX-License-Identifier: Apache-2.0 OR MIT */\n\
         /*\n * check_layout.h - compile-time checks of vir_abi.h against the vir-abi layout descriptors.\n\
         * GENERATED by the vir-spec crate; do not edit. Regenerate: VIR_BLESS=1 cargo test -p vir-spec\n */\n\
         #ifndef VIR_CHECK_LAYOUT_H\n#define VIR_CHECK_LAYOUT_H\n\n#include \"vir_abi.h\"\n\n\
         #define VIR_CHECK_FIELD_SIZE(s, f) sizeof(((struct s *)0)->f)\n\
         #define VIR_CHECK_FIELD_TYPE(s, f, t) _Generic(((struct s *)0)->f, t: 1, default: 0)\n\n",
    );
    for desc in ALL_STRUCTS {
        check_natural_layout(desc)?;
        let c = desc.c_name;
        let _ = writeln!(out, "/* {} */", desc.name);
        let _ = writeln!(
            out,
            "_Static_assert(sizeof(struct {c}) == {}, \"{c}: size\");",
            desc.size
        );
        let _ = writeln!(
            out,
            "_Static_assert(_Alignof(struct {c}) <= VIR_BUFFER_ALIGN, \"{c}: alignment within buffer alignment\");"
        );
        for f in desc.fields {
            let n = f.name;
            let _ = writeln!(
                out,
                "_Static_assert(offsetof(struct {c}, {n}) == {}, \"{c}.{n}: offset\");",
                f.offset
            );
            let _ = writeln!(
                out,
                "_Static_assert(VIR_CHECK_FIELD_SIZE({c}, {n}) == {}, \"{c}.{n}: size\");",
                f.size
            );
            match f.ty {
                FieldType::Bytes(len) => {
                    let _ = writeln!(
                        out,
                        "_Static_assert(sizeof(((struct {c} *)0)->{n}[0]) == 1 && VIR_CHECK_FIELD_SIZE({c}, {n}) == {len}, \"{c}.{n}: uint8_t[{len}]\");"
                    );
                }
                FieldType::Struct(nested) => {
                    let _ = writeln!(
                        out,
                        "_Static_assert(VIR_CHECK_FIELD_TYPE({c}, {n}, struct {nested}), \"{c}.{n}: struct {nested}\");"
                    );
                }
                other => {
                    let t = other.c_name();
                    let _ = writeln!(
                        out,
                        "_Static_assert(VIR_CHECK_FIELD_TYPE({c}, {n}, {t}), \"{c}.{n}: {t}\");"
                    );
                }
            }
        }
        out.push('\n');
    }
    out.push_str("#endif /* VIR_CHECK_LAYOUT_H */\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vir_abi::hw::vtd::{PostedIrte, RemappedIrte};
    use vir_abi::hw::{
        AmdIrte32Entry, AmdIrte128, AmdRemapIrte, ApicMode, CompatMsi, RemappableMsi,
    };

    fn format(prefix: &str) -> BitFormat {
        hw_formats()
            .into_iter()
            .find(|f| f.prefix == prefix)
            .unwrap()
    }

    fn mask(prefix: &str, field: &str) -> u128 {
        format(prefix)
            .fields
            .iter()
            .find(|f| f.name == field)
            .unwrap()
            .mask
    }

    #[test]
    fn every_wire_struct_has_natural_layout() {
        for d in ALL_STRUCTS {
            assert_eq!(check_natural_layout(d), Ok(()), "{}", d.name);
        }
        assert_eq!(
            struct_align(crate::tables::struct_by_name("QueryResponse").unwrap()),
            8
        );
        assert_eq!(
            struct_align(crate::tables::struct_by_name("Target").unwrap()),
            4
        );
        assert_eq!(
            struct_align(crate::tables::struct_by_name("ActivateRequest").unwrap()),
            4
        );
    }

    #[test]
    fn vtd_remapped_irte_masks_match_the_encoder() {
        // Encode a remapped entry with one field at its maximum and the others zero: the set bits
        // are the field's mask. This is independent of the bitfield layout type.
        let zero = RemappedIrte {
            present: false,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0,
            dest: 0,
            sid: 0,
            sq: 0,
            svt: Svt::NoCheck,
        };
        let enc = |e: RemappedIrte| e.encode(ApicMode::X2Apic).unwrap();
        let p = "VIR_VTD_IRTE_REMAPPED";
        assert_eq!(
            mask(p, "PRESENT"),
            enc(RemappedIrte {
                present: true,
                ..zero
            })
        );
        assert_eq!(mask(p, "FPD"), enc(RemappedIrte { fpd: true, ..zero }));
        assert_eq!(
            mask(p, "DELIVERY_MODE"),
            enc(RemappedIrte {
                delivery_mode: 7,
                ..zero
            })
        );
        assert_eq!(mask(p, "AVAIL"), enc(RemappedIrte { avail: 0xF, ..zero }));
        assert_eq!(
            mask(p, "VECTOR"),
            enc(RemappedIrte {
                vector: 0xFF,
                ..zero
            })
        );
        assert_eq!(mask(p, "VECTOR"), 0xFF << 16);
        assert_eq!(
            mask(p, "DST"),
            enc(RemappedIrte {
                dest: u32::MAX,
                ..zero
            })
        );
        assert_eq!(
            mask(p, "SID"),
            enc(RemappedIrte {
                sid: 0xFFFF,
                ..zero
            })
        );
        assert_eq!(mask(p, "SQ"), enc(RemappedIrte { sq: 3, ..zero }));
        assert_eq!(
            mask(p, "SVT"),
            enc(RemappedIrte {
                svt: Svt::Reserved,
                ..zero
            })
        );
        assert_eq!(mask(p, "IM"), 1 << 15);
    }

    #[test]
    fn vtd_posted_irte_masks_match_the_encoder() {
        let zero = PostedIrte {
            present: false,
            fpd: false,
            avail: 0,
            urgent: false,
            vector: 0,
            pda: 0,
            sid: 0,
            sq: 0,
            svt: Svt::NoCheck,
        };
        let im = 1u128 << 15;
        let enc = |e: PostedIrte| e.encode().unwrap() & !im;
        let p = "VIR_VTD_IRTE_POSTED";
        assert_eq!(
            mask(p, "URGENT"),
            enc(PostedIrte {
                urgent: true,
                ..zero
            })
        );
        assert_eq!(
            mask(p, "VECTOR"),
            enc(PostedIrte {
                vector: 0xFF,
                ..zero
            })
        );
        assert_eq!(
            mask(p, "PDA_31_6"),
            enc(PostedIrte {
                pda: 0xFFFF_FFC0,
                ..zero
            })
        );
        assert_eq!(
            mask(p, "PDA_63_32"),
            enc(PostedIrte {
                pda: 0xFFFF_FFFF_0000_0000,
                ..zero
            })
        );
        assert_eq!(
            mask(p, "SVT"),
            enc(PostedIrte {
                svt: Svt::Reserved,
                ..zero
            })
        );
        assert_eq!(mask(p, "IM"), im);
    }

    #[test]
    fn msi_masks_match_the_encoders() {
        let m = RemappableMsi {
            handle: 0x8000,
            shv: false,
            subhandle: 0,
        }
        .encode();
        assert_eq!(
            mask("VIR_VTD_MSI_ADDR", "HANDLE_15"),
            u128::from(m.address_lo & 0xF_FFFF & !0x10)
        );
        let m = RemappableMsi {
            handle: 0x7FFF,
            shv: true,
            subhandle: 0,
        }
        .encode();
        assert_eq!(
            mask("VIR_VTD_MSI_ADDR", "HANDLE_14_0") | mask("VIR_VTD_MSI_ADDR", "SHV"),
            u128::from(m.address_lo & 0xF_FFFF & !0x10)
        );
        let c = CompatMsi {
            dest_id: 0x7F00,
            dest_mode_logical: false,
            redirection_hint: false,
            vector: 0xFF,
            delivery_mode: DeliveryMode::Fixed,
            level_assert: false,
            trigger_level: false,
        }
        .encode(true)
        .unwrap();
        assert_eq!(
            mask("VIR_MSI_ADDR", "EXT_DEST_ID"),
            u128::from(c.address_lo & !MSI_ADDRESS_BASE)
        );
        assert_eq!(mask("VIR_MSI_DATA", "VECTOR"), u128::from(c.data));
        assert_eq!(mask("VIR_AMD_MSI_ADDR", "DM"), 1 << 2);
    }

    #[test]
    fn amd_masks_match_the_encoders() {
        let e32 = AmdIrte32Entry {
            remap_en: false,
            sup_iopf: false,
            int_type: 0,
            rq_eoi: false,
            dest_mode_logical: false,
            destination: 0xFF,
            vector: 0,
        };
        assert_eq!(
            mask("VIR_AMD_IRTE32", "DESTINATION"),
            u128::from(e32.encode().unwrap())
        );
        let r = AmdRemapIrte {
            remap_en: false,
            sup_iopf: false,
            int_type: 0,
            rq_eoi: false,
            dest_mode_logical: false,
            destination: u32::MAX,
            vector: 0,
        };
        assert_eq!(
            mask("VIR_AMD_IRTE128_REMAP", "DESTINATION_23_0")
                | mask("VIR_AMD_IRTE128_REMAP", "DESTINATION_31_24"),
            AmdIrte128::Remapped(r).encode().unwrap()
        );
        assert_eq!(
            mask("VIR_AMD_IRTE128_REMAP", "VECTOR"),
            AmdIrte128::Remapped(AmdRemapIrte {
                destination: 0,
                vector: 0xFF,
                ..r
            })
            .encode()
            .unwrap()
        );
    }

    #[test]
    fn info_leaf_and_posted_descriptor_masks() {
        assert_eq!(mask("VIR_CPUID_INFO_EAX", "MIN_VERSION"), 0xFFFF);
        assert_eq!(mask("VIR_CPUID_INFO_EAX", "MAX_VERSION"), 0xFFFF_0000);
        assert_eq!(mask("VIR_CPUID_INFO_ECX", "DOORBELL_PORT"), 0xFFFF);
        assert_eq!(mask("VIR_PI_DESC_NOTIFICATIONS", "ON"), 1);
        assert_eq!(mask("VIR_PI_DESC_NOTIFICATIONS", "SN"), 2);
    }

    #[test]
    fn every_format_field_is_contiguous_nonzero_and_disjoint() {
        for f in hw_formats() {
            let mut seen = 0u128;
            for field in &f.fields {
                assert_ne!(field.mask, 0, "{} {}", f.prefix, field.name);
                assert_eq!(
                    field.width(),
                    field.high_bit() - field.shift() + 1,
                    "{} {}",
                    f.prefix,
                    field.name
                );
                assert!(field.high_bit() < f.bits, "{} {}", f.prefix, field.name);
                assert_eq!(seen & field.mask, 0, "{} {} overlaps", f.prefix, field.name);
                assert_eq!(
                    field.mask & f.reserved,
                    0,
                    "{} {} is reserved",
                    f.prefix,
                    field.name
                );
                seen |= field.mask;
            }
        }
    }

    #[test]
    fn header_contains_key_definitions() {
        let h = generate_header().unwrap();
        assert!(h.contains("#define VIR_CALL_ACTIVATE "));
        assert!(h.contains("0x0011u\n"));
        assert!(h.contains("#define VIR_VTD_IRTE_REMAPPED_LO_VECTOR_SHIFT "));
        assert!(h.contains("#define VIR_VTD_IRTE_REMAPPED_HI_SID_SHIFT "));
        assert!(
            !h.contains("VIR_VTD_IRTE_REMAPPED_LO_SID_SHIFT"),
            "SID lives in the high word"
        );
        assert!(h.contains("\tcase VIR_STATUS_TABLE_FULL:\n\t\treturn 28; /* ENOSPC */\n"));
        assert!(h.contains("struct vir_activate_request {\n"));
        assert!(h.contains("\tstruct vir_target target;"));
        assert!(h.contains(
            "VIR_STATIC_ASSERT(offsetof(struct vir_activate_request, target) == 8, \"vir_activate_request.target at offset 8\");"
        ));
        assert!(h.contains("#define VIR_CPUID_SIGNATURE "));
        assert!(h.contains("\"vIR IRQRemap\""));
        assert!(h.ends_with("#endif /* VIR_ABI_H */\n"));
    }

    #[test]
    fn upper_snake_converts_debug_names() {
        assert_eq!(upper_snake("LowestPriority"), "LOWEST_PRIORITY");
        assert_eq!(upper_snake("NoCheck"), "NO_CHECK");
        assert_eq!(upper_snake("Fixed"), "FIXED");
    }
}
