//! What kernel and VMM engineers paste into `vir`: Linux debugfs dumps of the VT-d and AMD-Vi
//! interrupt remapping tables (samples in `tests/data/`, in the formats of
//! `drivers/iommu/intel/debugfs.c` and `drivers/iommu/amd/debugfs.c`), QEMU's x2APIC
//! high-address MSI, the AMD-Vi DM rule for indices of 0x200 and up, Linux's field names, and
//! errors that say what would make the input valid.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn vir(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vir"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vir starts");
    {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        if let Some(data) = stdin {
            let _ = pipe.write_all(data);
        }
    }
    child.wait_with_output().expect("vir runs")
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = vir(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "vir {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Runs a command that must fail with `code`; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = vir(args, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "vir {args:?}: {stderr}");
    stderr
}

fn sample(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn parse(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

/// (owner, table, index, decoded) of every entry of a `--json` dump.
fn entries(j: &Json) -> Vec<(String, String, u64, Json)> {
    j["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["owner"].as_str().unwrap_or("").to_owned(),
                e["table"].as_str().unwrap_or("").to_owned(),
                e["index"].as_u64().expect("index"),
                e["decoded"].clone(),
            )
        })
        .collect()
}

#[test]
fn vtd_debugfs_dump_decodes_entry_by_entry() {
    let path = sample("intel_ir_translation_struct.txt");
    let j = parse(&ok(&["decode", "debugfs", &path, "--json"], None));
    let e = entries(&j);
    let got: Vec<(&str, &str, u64, u64, u64)> = e
        .iter()
        .map(|(o, t, i, d)| {
            (
                o.as_str(),
                t.as_str(),
                *i,
                d["fields"]["vector"].as_u64().expect("vector"),
                d["fields"]["sid"].as_u64().expect("sid"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("dmar0", "vtd-remapped", 0, 0x24, 0x50),
            ("dmar0", "vtd-remapped", 1, 0xef, 0x50),
            ("dmar0", "vtd-remapped", 2, 0x25, 0xa0),
            ("dmar1", "vtd-remapped", 0, 0x26, 0x10),
            ("dmar0", "vtd-posted", 32, 0x61, 0x300),
            ("dmar0", "vtd-posted", 33, 0x62, 0x300),
            ("dmar0", "vtd-posted", 34, 0x41, 0x301),
        ]
    );
    let first = &e[0].3;
    assert_eq!(first["format"], "remapped");
    assert_eq!(first["kernel"]["dest_mode_logical"], "dst_mode");
    assert_eq!(first["kernel"]["delivery_mode"], "dlvry_mode");
    assert_eq!(first["fields"]["dest"], 0x80);
    assert_eq!(first["fields"]["svt"], 1);
    let posted = &e[4].3;
    assert_eq!(posted["format"], "posted");
    assert_eq!(posted["fields"]["pda"], 0x1_2345_6780u64);
    assert_eq!(posted["hex"]["pda"], "0x123456780");
    for (_, _, _, d) in &e {
        assert_eq!(d["notes"], Json::Array(vec![]), "no column disagrees: {d}");
    }
    // The same dump through standard input, as text.
    let text = std::fs::read(&path).expect("sample");
    let out = ok(&["decode", "debugfs"], Some(&text));
    assert_eq!(out.matches("\n== ").count() + 1, 7, "{out}");
    assert!(out.contains("== dmar0 vtd-posted entry 34"), "{out}");
}

#[test]
fn amd_debugfs_dumps_decode_entry_by_entry() {
    let j = parse(&ok(
        &["decode", "debugfs", &sample("amd_irqtbl.txt"), "--json"],
        None,
    ));
    let e = entries(&j);
    assert_eq!(e.len(), 5);
    assert_eq!(e[0].0, "0000:03:00:0");
    assert_eq!(e[0].1, "amd-irte128");
    assert_eq!(e[0].3["fields"]["vector"], 0x22);
    assert_eq!(e[0].3["fields"]["destination"], 3);
    // Destination bits 31:24 come from bits 127:120 (the high word's top byte).
    assert_eq!(e[2].3["fields"]["destination"], 0x100_0002);
    assert_eq!(e[3].0, "0000:41:00:1");
    assert_eq!(e[3].3["format"], "guest");
    assert_eq!(e[3].3["fields"]["backing_page"], 0x1_0abc_d000u64);
    assert_eq!(e[3].3["fields"]["ga_tag"], 0x10002);
    assert_eq!(e[4].3["fields"]["is_run"], false);

    let j = parse(&ok(
        &["decode", "debugfs", &sample("amd_irqtbl_32.txt"), "--json"],
        None,
    ));
    let e = entries(&j);
    let got: Vec<(u64, u64, u64)> = e
        .iter()
        .map(|(_, t, i, d)| {
            assert_eq!(t, "amd-irte32");
            (
                *i,
                d["fields"]["vector"].as_u64().expect("vector"),
                d["fields"]["destination"].as_u64().expect("destination"),
            )
        })
        .collect();
    assert_eq!(got, [(0, 0x30, 0), (1, 0x31, 1), (512, 0x42, 2)]);
}

#[test]
fn debugfs_errors_name_the_line() {
    let err = {
        let out = vir(
            &["decode", "debugfs"],
            Some(b"DeviceId 0000:03:00:0\nIRT[0000] 0000000000000022\n"),
        );
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err.contains("line 2"), "{err}");
    // An entry that does not decode is reported in place; the others are still printed.
    let out = vir(
        &["decode", "debugfs"],
        Some(b"DeviceId 0000:03:00:0\nIRT[0000] 0000000000000022 0000000000000301\nIRT[0001] 0000000000000000 0000000100000001\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("entry 0") && stdout.contains("error: amd-irte128"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 2 debugfs entries"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn linux_two_word_form_for_one_entry() {
    let two = ok(
        &[
            "decode",
            "vtd-irte",
            "0x0000000000040050",
            "0x000000800024000d",
        ],
        None,
    );
    let one = ok(&["decode", "vtd-irte", "0x40050000000800024000d"], None);
    assert_eq!(two, one);
}

#[test]
fn qemu_x2apic_high_address_msi_round_trips() {
    // QEMU's remapped interrupt to APIC ID 0x1234, vector 0x45.
    let j = parse(&ok(
        &["decode", "msi", "0x00001200fee34000", "0x4045", "--json"],
        None,
    ));
    assert_eq!(j["format"], "compat-x2apic-hi");
    assert_eq!(j["fields"]["dest_id"], 0x1234);
    assert_eq!(j["fields"]["vector"], 0x45);
    assert_eq!(j["names"]["dest_id"], "APIC ID, x2apic-high-address form");
    let hex = ok(
        &[
            "encode",
            "msi-compat",
            "--x2apic-hi",
            "dest_id=0x1234",
            "vector=0x45",
            "level_assert=1",
        ],
        None,
    );
    assert_eq!(hex.trim(), "00 40 e3 fe 00 12 00 00 45 40 00 00");
    let back = parse(&ok(&["decode", "msi-compat", hex.trim(), "--json"], None));
    assert_eq!(back["fields"]["dest_id"], 0x1234);
}

#[test]
fn amd_msi_index_0x200_and_up_needs_dm() {
    let err = fails(&["encode", "amd-msi", "index=0x345"], 1);
    assert!(err.contains("address_dm"), "{err}");
    let hex = ok(&["encode", "amd-msi", "index=0x345", "address_dm=1"], None);
    assert_eq!(hex.trim(), "04 00 e0 fe 00 00 00 00 45 03 00 00");
    let err = fails(&["decode", "amd-msi", "0xfee00000", "0x345"], 1);
    assert!(err.contains("message type"), "{err}");
}

#[test]
fn amd_reserved_int_type_and_linux_allocated_marker() {
    let j = parse(&ok(&["decode", "amd-irte32", "0xfffffffe", "--json"], None));
    assert_eq!(j["format"], "linux-allocated");
    assert!(
        j["notes"][0]
            .as_str()
            .unwrap_or("")
            .contains("IRTE_ALLOCATED")
    );
    // IntType 4 (NMI) in a remapped entry: decoded, with a note; encode refuses it.
    let j = parse(&ok(&["decode", "amd-irte32", "0x00300011", "--json"], None));
    assert_eq!(j["fields"]["int_type"], 4);
    assert!(j["notes"][0].as_str().unwrap_or("").contains("QEMU"), "{j}");
    let err = fails(&["encode", "amd-irte32", "int_type=4"], 1);
    assert!(err.contains("int_type"), "{err}");
    // Linux's allocated 128-bit entry: all zero but vector 0xff.
    let j = parse(&ok(
        &["decode", "amd-irte128", "0xff", "0x0", "--json"],
        None,
    ));
    assert!(
        j["notes"][0]
            .as_str()
            .unwrap_or("")
            .contains("irte_ga_set_allocated"),
        "{j}"
    );
}

#[test]
fn kernel_field_names_are_aliases() {
    let kernel = ok(
        &[
            "encode",
            "vtd-irte",
            "present=1",
            "dst_mode=logical",
            "redir_hint=1",
            "dest_id=0x80",
            "vector=0x24",
            "sid=0x50",
            "svt=1",
        ],
        None,
    );
    let ours = ok(
        &[
            "encode",
            "vtd-irte",
            "present=1",
            "dest_mode_logical=logical",
            "redirection_hint=1",
            "dest=0x80",
            "vector=0x24",
            "sid=0x50",
            "svt=1",
        ],
        None,
    );
    assert_eq!(kernel, ours);
    // The debugfs sample's first entry.
    let j = parse(&ok(
        &["decode", "vtd-irte", "--json", "--", kernel.trim()],
        None,
    ));
    assert_eq!(j["hex"]["dest"], "0x80");
    let guest = parse(&ok(
        &[
            "encode",
            "amd-irte128",
            "guest_mode=guest",
            "valid=1",
            "ga_root_ptr=0x10abcd",
            "--json",
        ],
        None,
    ));
    assert_eq!(guest["fields"]["backing_page"], 0x1_0abc_d000u64);
    assert_eq!(guest["fields"]["remap_en"], true);
    let err = fails(&["encode", "vtd-irte", "dest=1", "dest_id=1"], 2);
    assert!(err.contains("twice"), "{err}");
}

#[test]
fn errors_list_names_and_suggest_the_mode_or_flag() {
    let err = fails(&["encode", "vtd-irte", "pda=0x1000"], 2);
    assert!(err.contains("add im=posted"), "{err}");
    assert!(err.contains("fields: im, present"), "{err}");
    let err = fails(&["encode", "amd-irte128", "ga_tag=1"], 2);
    assert!(err.contains("add guest_mode=guest"), "{err}");
    let err = fails(
        &["encode", "amd-irte128", "guest_mode=guest", "int_type=1"],
        2,
    );
    assert!(err.contains("add guest_mode=remapped"), "{err}");
    let err = fails(&["encode", "vtd-irte", "vectr=1"], 2);
    assert!(err.contains("did you mean 'vector'?"), "{err}");
    let err = fails(&["encode", "msi-compat", "dest_id=300"], 1);
    assert!(
        err.contains("--ext-dest-id") && err.contains("--x2apic-hi"),
        "{err}"
    );
    let err = fails(&["decode", "msi-compat", "0xfee23020", "0x4041"], 1);
    assert!(err.contains("--ext-dest-id"), "{err}");
}
