//! The generated C header builds the golden values: `spec/c/check_abi.c` (which includes
//! `vir_abi.h` and the generated `check_layout.h`) is compiled with the system C compiler as
//! strict C11, run, and every value it prints is compared byte for byte with the Rust encoding
//! of the same value and with the golden vector of the same name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vir_abi::hw::amd::AmdRemapIrte;
use vir_abi::hw::{
    AmdIrte32Entry, AmdIrte128, AmdMsi, ApicMode, CompatMsi, DeliveryMode, DestForm,
    PostedDescriptor, PostedIrte, RemappableMsi, RemappedIrte, Svt,
};
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, DoorbellBlock, MessageFormat, StorageKind,
    Target,
};
use vir_spec::{CHECK_ABI_C_PATH, VECTORS_DIR, default_root, vectors};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

/// The C compiler to use: `$CC`, else `cc`, `gcc` or `clang`, whichever runs.
fn c_compiler() -> Option<String> {
    let candidates: Vec<String> = std::env::var("CC")
        .ok()
        .into_iter()
        .chain(["cc", "gcc", "clang"].map(String::from))
        .collect();
    candidates.into_iter().find(|cc| {
        Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn compile_and_run(cc: &str, root: &Path) -> String {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let exe = out_dir.join("vir_check_abi");
    let compile = Command::new(cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg("-I")
        .arg(root.join("abi/include"))
        .arg("-I")
        .arg(root.join("spec/c"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join(CHECK_ABI_C_PATH))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        compile.status.success(),
        "{cc} failed on {CHECK_ABI_C_PATH}:\n{}",
        String::from_utf8_lossy(&compile.stderr)
    );
    let run = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(run.status.success(), "check_abi exited with {}", run.status);
    String::from_utf8(run.stdout).expect("check_abi prints ASCII")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {s}")))
        .collect()
}

/// The same values as check_abi.c (and the vector files), encoded by the abi in Rust.
fn rust_encodings() -> BTreeMap<&'static str, Vec<u8>> {
    let mut m = BTreeMap::new();
    let handle = 0x0001_0003;
    m.insert(
        "allocate_request",
        AllocateRequest {
            device_id: U32::new(0x0118),
            kind: StorageKind::MSIX.0,
            log2_count: 0,
            reserved0: U16::ZERO,
            index: U32::new(7),
            reserved1: U32::ZERO,
        }
        .as_bytes()
        .to_vec(),
    );
    m.insert(
        "activate_request",
        ActivateRequest {
            handle: U32::new(handle),
            subhandle: U16::ZERO,
            flags: U16::ZERO,
            target: Target::new(0x102, 0x45),
        }
        .as_bytes()
        .to_vec(),
    );
    let msg = RemappableMsi {
        handle: 0x1234,
        shv: true,
        subhandle: 0,
    }
    .encode();
    m.insert(
        "activate_response",
        ActivateResponse {
            address_lo: U32::new(msg.address_lo),
            address_hi: U32::new(msg.address_hi),
            data: U32::new(msg.data),
            format: MessageFormat::VTD_REMAPPABLE.0,
            reserved0: 0,
            reserved1: U16::ZERO,
            reserved2: U64::ZERO,
        }
        .as_bytes()
        .to_vec(),
    );
    m.insert(
        "doorbell_block",
        DoorbellBlock {
            call: U32::new(u32::from(vir_abi::call::CallCode::ACTIVATE.0)),
            status: U32::new(Status::SUCCESS.0),
            request_gpa: U64::new(0x1234_5000),
            request_len: U32::new(16),
            response_len: U32::new(24),
            response_gpa: U64::new(0x1234_5040),
        }
        .as_bytes()
        .to_vec(),
    );
    m.insert("vtd_remappable_msi_shv", msg.to_bytes().to_vec());
    let compat = CompatMsi {
        dest_id: 0x1234,
        dest_mode_logical: false,
        redirection_hint: false,
        vector: 0x20,
        delivery_mode: DeliveryMode::Fixed,
        level_assert: false,
        trigger_level: false,
    };
    m.insert(
        "compat_msi_ext_dest",
        compat.encode(true).unwrap().to_bytes().to_vec(),
    );
    m.insert(
        "compat_msi_x2apic_hi",
        CompatMsi {
            dest_id: 0x1234,
            vector: 0x45,
            level_assert: true,
            ..compat
        }
        .encode_form(DestForm::HighAddress)
        .unwrap()
        .to_bytes()
        .to_vec(),
    );
    m.insert(
        "amd_msi_2k_dm",
        AmdMsi {
            index: 0x345,
            address_dm: true,
        }
        .encode()
        .unwrap()
        .to_bytes()
        .to_vec(),
    );
    let remapped = RemappedIrte {
        present: true,
        fpd: false,
        dest_mode_logical: false,
        redirection_hint: false,
        trigger_level: false,
        delivery_mode: 0,
        avail: 0,
        vector: 0x45,
        dest: 0x102,
        sid: 0x0118,
        sq: 0,
        svt: Svt::VerifySid,
    };
    m.insert(
        "vtd_irte_remapped_x2apic",
        remapped
            .encode(ApicMode::X2Apic)
            .unwrap()
            .to_le_bytes()
            .to_vec(),
    );
    let posted = PostedIrte {
        present: true,
        fpd: false,
        avail: 0,
        urgent: false,
        vector: 0x51,
        pda: 0x1_2345_6780,
        sid: 0x0118,
        sq: 0,
        svt: Svt::VerifySid,
    };
    m.insert(
        "vtd_irte_posted",
        posted.encode().unwrap().to_le_bytes().to_vec(),
    );
    let mut pd = PostedDescriptor::new();
    pd.set_pir(0x45);
    pd.set_pir(0xEF);
    pd.set_on(true);
    pd.set_nv(0xF2);
    pd.set_ndst(ApicMode::X2Apic, 0x102).unwrap();
    m.insert("posted_descriptor", pd.to_bytes().to_vec());
    let amd = AmdRemapIrte {
        remap_en: true,
        sup_iopf: false,
        int_type: 0,
        rq_eoi: false,
        dest_mode_logical: false,
        destination: 0x1234_5678,
        vector: 0x45,
    };
    m.insert(
        "amd_irte_128",
        AmdIrte128::Remapped(amd)
            .encode()
            .unwrap()
            .to_le_bytes()
            .to_vec(),
    );
    let amd32 = AmdIrte32Entry {
        remap_en: true,
        sup_iopf: false,
        int_type: 0,
        rq_eoi: false,
        dest_mode_logical: false,
        destination: 3,
        vector: 0x45,
    };
    m.insert(
        "amd_irte_32",
        amd32.encode().unwrap().to_le_bytes().to_vec(),
    );
    m.insert(
        "amd_msi",
        AmdMsi {
            index: 0x123,
            address_dm: false,
        }
        .encode()
        .unwrap()
        .to_bytes()
        .to_vec(),
    );
    m
}

#[test]
fn c_header_builds_the_golden_vectors() {
    let Some(cc) = c_compiler() else {
        println!(
            "SKIPPED: no C compiler found ($CC, cc, gcc, clang); the C header was not checked"
        );
        return;
    };
    let root = default_root();
    let output = compile_and_run(&cc, &root);
    let golden: BTreeMap<String, vectors::Vector> = vectors::load_dir(&root.join(VECTORS_DIR))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect();
    let rust = rust_encodings();
    let mut seen = Vec::new();
    let mut statuses = Vec::new();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status", value, errno, name] => statuses.push((
                value.parse::<u32>().expect("status value"),
                errno.parse::<i32>().expect("errno"),
                name.to_string(),
            )),
            [name, hex] => {
                let c_bytes = unhex(hex);
                let r = rust
                    .get(name)
                    .unwrap_or_else(|| panic!("no Rust encoding for C value {name}"));
                assert_eq!(
                    &c_bytes, r,
                    "{name}: C (left) and Rust (right) encodings differ"
                );
                let g = golden
                    .get(*name)
                    .unwrap_or_else(|| panic!("no golden vector {name}.hex"));
                assert_eq!(
                    c_bytes, g.bytes,
                    "{name}: C encoding (left) differs from {name}.hex (right)"
                );
                seen.push(name.to_string());
            }
            _ => panic!("unexpected output line from check_abi: {line:?}"),
        }
    }
    let mut expected: Vec<String> = rust.keys().map(|k| k.to_string()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(
        seen, expected,
        "check_abi printed a different set of values"
    );

    // vir_status_errno and vir_status_name agree with the abi for every status and an unknown one.
    let mut want: Vec<(u32, i32, String)> = Status::ALL
        .iter()
        .map(|s| (s.0, s.errno(), s.name().unwrap_or("?").to_string()))
        .collect();
    let unknown = Status(Status::ALL.len() as u32);
    want.push((unknown.0, unknown.errno(), "-".to_string()));
    assert_eq!(statuses, want);
}
