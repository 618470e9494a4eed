//! The golden vectors of spec/vectors/ decode with the abi to exactly the field values their
//! headers list and re-encode to exactly their bytes; wire vectors also match the typed Rust
//! structures built from the same values.

use std::collections::BTreeMap;

use vir_abi::wire::{
    ALL_STRUCTS, ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse,
    DeactivateRequest, DoorbellBlock, FreeRequest, NegotiateRequest, NegotiateResponse,
    QueryResponse, QuotaResponse, SetAffinityRequest, Target,
};
use vir_spec::vectors::{self, HwKind, Vector, VectorFormat};
use vir_spec::{VECTORS_DIR, default_root};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

fn load() -> BTreeMap<String, Vector> {
    vectors::load_dir(&default_root().join(VECTORS_DIR))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect()
}

/// File stem of a wire structure's vector: the snake-case of its Rust name.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn every_vector_decodes_to_its_fields_and_reencodes_to_its_bytes() {
    let all = load();
    assert!(!all.is_empty());
    for (name, v) in &all {
        if let Err(e) = vectors::check(v) {
            panic!("{VECTORS_DIR}/{name}.hex: {e}");
        }
    }
}

#[test]
fn every_wire_struct_has_a_vector() {
    let all = load();
    for s in ALL_STRUCTS {
        let stem = snake(s.name);
        let v = all
            .get(&stem)
            .unwrap_or_else(|| panic!("no {VECTORS_DIR}/{stem}.hex for {}", s.name));
        assert!(
            matches!(v.format, VectorFormat::Wire(d) if d.name == s.name),
            "{stem}.hex is not `# format: wire {}`",
            s.name
        );
    }
}

#[test]
fn representative_hardware_vectors_exist() {
    let all = load();
    let required = [
        ("vtd_remappable_msi_shv", HwKind::VtdRemappableMsi),
        ("vtd_irte_remapped_x2apic", HwKind::VtdIrteRemapped),
        ("vtd_irte_remapped_xapic", HwKind::VtdIrteRemapped),
        ("vtd_irte_posted", HwKind::VtdIrtePosted),
        ("compat_msi_ext_dest", HwKind::CompatMsi),
        ("posted_descriptor", HwKind::PostedDescriptor),
        ("amd_msi", HwKind::AmdMsi),
        ("amd_msi_dm", HwKind::AmdMsi),
        ("amd_irte_32", HwKind::AmdIrte32),
        ("amd_irte_128", HwKind::AmdIrte128Remapped),
        ("amd_irte_128_guest", HwKind::AmdIrte128Guest),
    ];
    for (stem, kind) in required {
        let v = all
            .get(stem)
            .unwrap_or_else(|| panic!("no {VECTORS_DIR}/{stem}.hex"));
        assert!(
            matches!(v.format, VectorFormat::Hw(k) if k == kind),
            "{stem}.hex is not hw {}",
            kind.name()
        );
    }
}

/// Builds each wire structure with its typed Rust fields from the values a vector lists and
/// compares with the vector's bytes both ways (zerocopy `as_bytes` and `read_from_bytes`). This
/// checks the descriptor-driven decoding of `vectors::check` against the real structures.
#[test]
fn wire_vectors_match_the_typed_structures() {
    let all = load();
    // Every structure once at least (some have several vectors: ActivateResponse for VT-d
    // and AMD-Vi messages).
    let mut checked = std::collections::BTreeSet::new();
    for (stem, v) in &all {
        let VectorFormat::Wire(desc) = v.format else {
            continue;
        };
        let f = |name: &str| -> u128 {
            v.fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, x)| *x)
                .unwrap_or_else(|| panic!("{stem}: no {name}"))
        };
        let u8_ = |n: &str| u8::try_from(f(n)).unwrap_or_else(|_| panic!("{stem}: {n} too large"));
        let u16_ = |n: &str| {
            U16::new(u16::try_from(f(n)).unwrap_or_else(|_| panic!("{stem}: {n} too large")))
        };
        let u32_ = |n: &str| {
            U32::new(u32::try_from(f(n)).unwrap_or_else(|_| panic!("{stem}: {n} too large")))
        };
        let u64_ = |n: &str| {
            U64::new(u64::try_from(f(n)).unwrap_or_else(|_| panic!("{stem}: {n} too large")))
        };
        let target = |p: &str| Target {
            apic_id: u32_(&format!("{p}.apic_id")),
            vector: u8_(&format!("{p}.vector")),
            reserved0: u8_(&format!("{p}.reserved0")),
            reserved1: u16_(&format!("{p}.reserved1")),
        };
        macro_rules! both_ways {
            ($t:ty, $value:expr) => {{
                let value: $t = $value;
                assert_eq!(
                    value.as_bytes(),
                    v.bytes.as_slice(),
                    "{stem}: typed encoding differs"
                );
                assert_eq!(
                    <$t>::read_from_bytes(&v.bytes).ok(),
                    Some(value),
                    "{stem}: typed decoding differs"
                );
            }};
        }
        match desc.name {
            "QueryResponse" => both_ways!(
                QueryResponse,
                QueryResponse {
                    min_version: u16_("min_version"),
                    max_version: u16_("max_version"),
                    message_format: u8_("message_format"),
                    max_msi_log2: u8_("max_msi_log2"),
                    vm_state: u8_("vm_state"),
                    reserved0: u8_("reserved0"),
                    features_offered: u64_("features_offered"),
                    features_active: u64_("features_active"),
                    active_version: u16_("active_version"),
                    reserved1: u16_("reserved1"),
                    irte_quota: u32_("irte_quota"),
                    vector_quota: u32_("vector_quota"),
                    reserved2: u32_("reserved2"),
                }
            ),
            "NegotiateRequest" => both_ways!(
                NegotiateRequest,
                NegotiateRequest {
                    version: u16_("version"),
                    reserved0: u16_("reserved0"),
                    reserved1: u32_("reserved1"),
                    features: u64_("features"),
                }
            ),
            "NegotiateResponse" => both_ways!(
                NegotiateResponse,
                NegotiateResponse {
                    version: u16_("version"),
                    reserved0: u16_("reserved0"),
                    session: u32_("session"),
                    features: u64_("features"),
                }
            ),
            "AllocateRequest" => both_ways!(
                AllocateRequest,
                AllocateRequest {
                    device_id: u32_("device_id"),
                    kind: u8_("kind"),
                    log2_count: u8_("log2_count"),
                    reserved0: u16_("reserved0"),
                    index: u32_("index"),
                    reserved1: u32_("reserved1"),
                }
            ),
            "AllocateResponse" => both_ways!(
                AllocateResponse,
                AllocateResponse {
                    handle: u32_("handle"),
                    count: u16_("count"),
                    reserved0: u16_("reserved0"),
                }
            ),
            "Target" => both_ways!(
                Target,
                Target {
                    apic_id: u32_("apic_id"),
                    vector: u8_("vector"),
                    reserved0: u8_("reserved0"),
                    reserved1: u16_("reserved1"),
                }
            ),
            "ActivateRequest" => both_ways!(
                ActivateRequest,
                ActivateRequest {
                    handle: u32_("handle"),
                    subhandle: u16_("subhandle"),
                    flags: u16_("flags"),
                    target: target("target"),
                }
            ),
            "ActivateResponse" => both_ways!(
                ActivateResponse,
                ActivateResponse {
                    address_lo: u32_("address_lo"),
                    address_hi: u32_("address_hi"),
                    data: u32_("data"),
                    format: u8_("format"),
                    reserved0: u8_("reserved0"),
                    reserved1: u16_("reserved1"),
                    reserved2: u64_("reserved2"),
                }
            ),
            "SetAffinityRequest" => both_ways!(
                SetAffinityRequest,
                SetAffinityRequest {
                    handle: u32_("handle"),
                    subhandle: u16_("subhandle"),
                    reserved0: u16_("reserved0"),
                    target: target("target"),
                }
            ),
            "DeactivateRequest" => both_ways!(
                DeactivateRequest,
                DeactivateRequest {
                    handle: u32_("handle"),
                    subhandle: u16_("subhandle"),
                    reserved0: u16_("reserved0"),
                }
            ),
            "FreeRequest" => both_ways!(
                FreeRequest,
                FreeRequest {
                    handle: u32_("handle"),
                    reserved0: u32_("reserved0"),
                }
            ),
            "QuotaResponse" => both_ways!(
                QuotaResponse,
                QuotaResponse {
                    irtes_total: u32_("irtes_total"),
                    irtes_free: u32_("irtes_free"),
                    vectors_total: u32_("vectors_total"),
                    vectors_free: u32_("vectors_free"),
                }
            ),
            "DoorbellBlock" => both_ways!(
                DoorbellBlock,
                DoorbellBlock {
                    call: u32_("call"),
                    status: u32_("status"),
                    request_gpa: u64_("request_gpa"),
                    request_len: u32_("request_len"),
                    response_len: u32_("response_len"),
                    response_gpa: u64_("response_gpa"),
                }
            ),
            other => panic!("{stem}: no typed check for wire structure {other}; add one here"),
        }
        checked.insert(desc.name);
    }
    assert_eq!(
        checked.len(),
        ALL_STRUCTS.len(),
        "one typed check per wire structure"
    );
}
