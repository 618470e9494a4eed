//! Scenarios that run the built `vir` binary: round trips, real-world values, JSON output and
//! malformed input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

/// Runs `vir` with `args`, feeding `stdin` (empty when `None`).
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
            // The tool may exit before reading everything (e.g. on an unknown type).
            let _ = pipe.write_all(data);
        }
    }
    child.wait_with_output().expect("vir runs")
}

/// Runs `vir`, asserts success and an empty stderr, and returns stdout.
fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = vir(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "vir {args:?} failed: {stderr}");
    assert_eq!(stderr, "", "vir {args:?} wrote to stderr");
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Runs `vir ... --json` and parses the object.
fn json(args: &[&str], stdin: Option<&[u8]>) -> Json {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(&all, stdin);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vir {all:?}: bad JSON {e}: {text}"))
}

/// A JSON field as an integer (booleans as 0/1); numbers above 2^53 - 1 are hex strings, and
/// the `hex` object holds every number exactly.
fn field(j: &Json, name: &str) -> u64 {
    match &j["fields"][name] {
        Json::Bool(b) => u64::from(*b),
        Json::String(s) => {
            assert_eq!(
                j["hex"][name],
                Json::String(s.clone()),
                "hex and fields agree"
            );
            let v = number(s);
            assert!(v >= 1 << 53, "{name} = {s} would be exact as a JSON number");
            v
        }
        Json::Number(n) => n
            .as_u64()
            .unwrap_or_else(|| panic!("{name} is not a u64: {n}")),
        other => panic!("field {name} is {other} in {j}"),
    }
}

/// Parses a test's numeric value (`0x…` or decimal).
fn number(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
        None => text.parse().expect("decimal"),
    }
}

/// Encodes `assignments` as `ty` (with `opts`), decodes the hex output (from the command line and
/// from stdin) and checks every assigned field reads back.
fn round_trip(ty: &str, opts: &[&str], assignments: &[&str]) {
    let mut args = vec!["encode", ty];
    args.extend_from_slice(opts);
    args.extend_from_slice(assignments);
    let hex = ok(&args, None);
    assert_eq!(hex.lines().count(), 1, "encode prints one line: {hex:?}");
    let hex = hex.trim_end();

    let mut dec = vec!["decode", ty];
    dec.extend_from_slice(opts);
    dec.push(hex);
    let from_args = json(&dec, None);
    let mut dec_stdin = vec!["decode", ty];
    dec_stdin.extend_from_slice(opts);
    let from_stdin = json(&dec_stdin, Some(hex.as_bytes()));
    assert_eq!(
        from_args, from_stdin,
        "{ty}: stdin and argument decode differ"
    );
    assert_eq!(from_args["type"], ty);
    assert_eq!(from_args["bytes"], hex);

    // `encode --json` prints the decode of what it encoded.
    let mut enc_json = vec!["encode", ty];
    enc_json.extend_from_slice(opts);
    enc_json.extend_from_slice(assignments);
    assert_eq!(
        json(&enc_json, None),
        from_args,
        "{ty}: encode --json differs"
    );

    for a in assignments {
        let (name, value) = a.split_once('=').expect("assignment");
        if name == "pir" {
            let expected: Vec<u64> = value.split(',').map(number).collect();
            let got: Vec<u64> = from_args["fields"]["pir"]
                .as_array()
                .expect("pir is an array")
                .iter()
                .filter_map(Json::as_u64)
                .collect();
            assert_eq!(got, expected, "{ty}.pir");
        } else if value.starts_with(|c: char| c.is_ascii_digit()) {
            assert_eq!(field(&from_args, name), number(value), "{ty}.{name}");
        }
    }
}

#[test]
fn round_trip_hardware_types() {
    round_trip("msi", &[], &["address=0xfee00818", "data=0x2"]);
    round_trip(
        "msi-compat",
        &[],
        &[
            "dest_id=0x12",
            "vector=0x23",
            "delivery_mode=4",
            "level_assert=1",
            "trigger_level=1",
            "redirection_hint=1",
        ],
    );
    round_trip(
        "msi-compat",
        &["--ext-dest-id"],
        &["dest_id=0x7fff", "vector=0xec", "dest_mode_logical=1"],
    );
    round_trip(
        "vtd-msi",
        &[],
        &["handle=0x8123", "shv=1", "subhandle=0x1f"],
    );
    round_trip("vtd-msi", &[], &["handle=0x40", "shv=0"]);
    round_trip("amd-msi", &[], &["index=0x7ff", "address_dm=1"]);
    round_trip(
        "vtd-irte",
        &[],
        &[
            "present=1",
            "fpd=1",
            "redirection_hint=1",
            "trigger_level=1",
            "delivery_mode=1",
            "avail=0xa",
            "vector=0xef",
            "dest=0xfffffffe",
            "sid=0xff07",
            "sq=3",
            "svt=2",
        ],
    );
    round_trip(
        "vtd-irte",
        &["--xapic"],
        &["present=1", "vector=0x45", "dest=0xff"],
    );
    round_trip(
        "vtd-irte",
        &[],
        &[
            "im=1",
            "present=1",
            "urgent=1",
            "avail=5",
            "vector=0x61",
            "pda=0xffffffffffffffc0",
            "sid=0x0300",
            "svt=1",
        ],
    );
    round_trip(
        "vtd-irta",
        &[],
        &["size_s=15", "eime=1", "base=0xfffffffffffff000"],
    );
    round_trip(
        "posted-desc",
        &[],
        &[
            "pir=0,0x45,0x80,255",
            "on=1",
            "sn=1",
            "nv=0xf2",
            "ndst=0x12345678",
        ],
    );
    round_trip(
        "posted-desc",
        &["--xapic"],
        &["pir=0x20", "nv=0xf2", "ndst=0xff"],
    );
    round_trip(
        "amd-irte32",
        &[],
        &[
            "remap_en=1",
            "sup_iopf=1",
            "int_type=1",
            "rq_eoi=1",
            "dest_mode_logical=1",
            "destination=0xfe",
            "vector=0x31",
        ],
    );
    round_trip(
        "amd-irte128",
        &[],
        &[
            "remap_en=1",
            "int_type=0",
            "destination=0xfedcba98",
            "vector=0x31",
        ],
    );
    round_trip(
        "amd-irte128",
        &[],
        &[
            "guest_mode=1",
            "remap_en=1",
            "ga_log_intr=1",
            "is_run=1",
            "destination=0x01000002",
            "ga_tag=0xdeadbeef",
            "vector=0x41",
            "backing_page=0xffffffffff000",
        ],
    );
}

#[test]
fn round_trip_every_wire_struct() {
    round_trip(
        "query-response",
        &[],
        &[
            "min_version=1",
            "max_version=1",
            "message_format=1",
            "max_msi_log2=5",
            "vm_state=1",
            "features_offered=0x3f",
            "features_active=0x23",
            "active_version=1",
            "irte_quota=2048",
            "vector_quota=0xffffffff",
        ],
    );
    round_trip("negotiate-request", &[], &["version=1", "features=0x3f"]);
    round_trip(
        "negotiate-response",
        &[],
        &["version=1", "session=7", "features=0x21"],
    );
    round_trip(
        "allocate-request",
        &[],
        &["device_id=0x00010300", "kind=1", "log2_count=5", "index=0"],
    );
    round_trip("allocate-response", &[], &["handle=0x10001", "count=32"]);
    round_trip("target", &[], &["apic_id=0xffffffff", "vector=0xfe"]);
    round_trip(
        "activate-request",
        &[],
        &[
            "handle=0x10001",
            "subhandle=31",
            "flags=1",
            "target.apic_id=3",
            "target.vector=0x45",
        ],
    );
    round_trip(
        "activate-response",
        &[],
        &[
            "address_lo=0xfee00818",
            "address_hi=0",
            "data=0",
            "format=1",
        ],
    );
    round_trip(
        "set-affinity-request",
        &[],
        &[
            "handle=9",
            "subhandle=1",
            "target.apic_id=0x100",
            "target.vector=0x30",
        ],
    );
    round_trip("deactivate-request", &[], &["handle=9", "subhandle=2"]);
    round_trip("free-request", &[], &["handle=0xffffffff"]);
    round_trip(
        "quota-response",
        &[],
        &[
            "irtes_total=64",
            "irtes_free=60",
            "vectors_total=32",
            "vectors_free=31",
        ],
    );
    round_trip(
        "doorbell-block",
        &[],
        &[
            "call=0x11",
            "status=0",
            "request_gpa=0x1000",
            "request_len=16",
            "response_len=24",
            "response_gpa=0x1010",
        ],
    );
}

/// Every type of `vir decode --help` has a round trip above.
#[test]
fn help_lists_every_type_with_a_round_trip() {
    let help = ok(&["decode", "--help"], None);
    let listed: Vec<&str> = help
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains(" bytes)"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let tested = [
        "msi",
        "msi-compat",
        "vtd-msi",
        "amd-msi",
        "vtd-irte",
        "vtd-irta",
        "posted-desc",
        "amd-irte32",
        "amd-irte128",
        "query-response",
        "negotiate-request",
        "negotiate-response",
        "allocate-request",
        "allocate-response",
        "target",
        "activate-request",
        "activate-response",
        "set-affinity-request",
        "deactivate-request",
        "free-request",
        "quota-response",
        "doorbell-block",
    ];
    assert_eq!(listed, tested);
}

// VIR-FMT-H-003, VIR-SEC-H-001: an IRTE as Linux programs it for a device MSI in remapped mode
// (P=1, RH=1, edge, fixed, SVT=1, SQ=0, SID = requester id 03:00.0), x2APIC destination 7.
#[test]
fn linux_remapped_irte_decodes_to_exact_fields() {
    let text = ok(&["decode", "vtd-irte", "0x403000000000700450009"], None);
    assert_eq!(
        text,
        "vtd-irte (remapped format)\n\
         present           = 1      (bit 0)\n\
         fpd               = 0      (bit 1)\n\
         dest_mode_logical = 0      (bit 2)       physical\n\
         redirection_hint  = 1      (bit 3)\n\
         trigger_level     = 0      (bit 4)       edge\n\
         delivery_mode     = 0x0    (bits 7:5)    fixed\n\
         avail             = 0x0    (bits 11:8)\n\
         im                = 0      (bit 15)      remapped\n\
         vector            = 0x45   (bits 23:16)\n\
         dest              = 0x7    (bits 63:32)  x2APIC APIC ID\n\
         sid               = 0x300  (bits 79:64)  03:00.0\n\
         sq                = 0x0    (bits 81:80)  compare all 16 bits\n\
         svt               = 0x1    (bits 83:82)  verify requester id against SID under SQ\n"
    );
    // The same entry as bytes in memory order.
    let bytes = "09 00 45 00 07 00 00 00 00 03 04 00 00 00 00 00";
    assert_eq!(ok(&["decode", "vtd-irte", bytes], None), text);
    let j = json(&["decode", "vtd-irte", bytes], None);
    assert_eq!(j["format"], "remapped");
    assert_eq!(j["fields"]["present"], true);
    assert_eq!(j["fields"]["vector"], 0x45);
    assert_eq!(j["fields"]["dest"], 7);
    assert_eq!(j["fields"]["sid"], 0x300);
    assert_eq!(j["fields"]["svt"], 1);
    assert_eq!(j["names"]["delivery_mode"], "fixed");
    assert_eq!(j["notes"], Json::Array(vec![]));

    // xAPIC placement: the APIC ID is in DST bits 15:8 (IRTE 47:40).
    let j = json(
        &["decode", "vtd-irte", "--xapic", "0x403000000070000450009"],
        None,
    );
    assert_eq!(j["fields"]["dest"], 7);
    // Read as x2APIC, the same bits are APIC ID 0x700.
    let j = json(&["decode", "vtd-irte", "0x403000000070000450009"], None);
    assert_eq!(j["fields"]["dest"], 0x700);
}

// VIR-FMT-H-003: a posted IRTE names the guest vector and the posted descriptor address.
#[test]
fn linux_posted_irte_decodes_to_exact_fields() {
    // P=1, IM=1, vector 0x41, PDA 0x1_0ab3_c040 (bits 31:6 in 63:38, 63:32 in 127:96),
    // SID 03:00.0, SVT=1.
    let pda: u128 = 0x1_0ab3_c040;
    let raw: u128 = 1
        | 1 << 15
        | 0x41 << 16
        | ((pda & 0xffff_ffff) >> 6) << 38
        | 0x0300 << 64
        | 1 << 82
        | (pda >> 32) << 96;
    let j = json(&["decode", "vtd-irte", &format!("{raw:#x}")], None);
    assert_eq!(j["format"], "posted");
    assert_eq!(j["fields"]["im"], true);
    assert_eq!(j["fields"]["vector"], 0x41);
    assert_eq!(j["fields"]["pda"], 0x1_0ab3_c040_u64);
    assert_eq!(j["fields"]["sid"], 0x300);
    assert_eq!(j["fields"]["urgent"], false);
}

// VIR-FMT-H-001: a VT-d remappable message as Linux and a vIR host compose it: handle in the
// address, SHV = 1, data = sub-handle (0 for the first vector of a block).
#[test]
fn linux_remappable_message_decodes_to_exact_fields() {
    let text = ok(&["decode", "msi", "0xfee00818", "0x0"], None);
    assert_eq!(
        text,
        "msi (remappable format)\n\
         address       = 0xfee00818 (bytes 0-7)\n\
         data          = 0x0        (bytes 8-11)\n\
         handle        = 0x40       (address bits 2,19:5)\n\
         shv           = 1          (address bit 3)\n\
         subhandle     = 0x0        (data bits 15:0)\n\
         irte_index    = 0x40       (derived)\n"
    );
    // Vector 2 of a multi-vector MSI block: the device adds 2 to the data.
    let j = json(&["decode", "vtd-msi", "0xfee00818 0x2"], None);
    assert_eq!(j["fields"]["handle"], 0x40);
    assert_eq!(j["fields"]["subhandle"], 2);
    assert_eq!(j["fields"]["irte_index"], 0x42);
    // Handle bit 15 is address bit 2.
    let j = json(&["decode", "vtd-msi", "0xfee0001c", "0x0"], None);
    assert_eq!(j["fields"]["handle"], 0x8000);
    // The 12 wire bytes give the same message.
    let j2 = json(
        &["decode", "vtd-msi", "1c 00 e0 fe 00 00 00 00 00 00 00 00"],
        None,
    );
    assert_eq!(j, j2);
}

// VIR-FMT-H-002: a compatibility-format message is decoded, and flagged as never returned by a
// vIR host.
#[test]
fn compat_message_decodes_and_is_flagged() {
    let j = json(&["decode", "msi", "0xfee01000", "0x4023"], None);
    assert_eq!(j["format"], "compat");
    assert_eq!(j["fields"]["dest_id"], 1);
    assert_eq!(j["fields"]["vector"], 0x23);
    assert_eq!(j["fields"]["level_assert"], true);
    assert_eq!(j["names"]["delivery_mode"], "fixed");
    assert_eq!(j["names"]["trigger_level"], "edge");
    let notes = j["notes"].as_array().expect("notes");
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().is_some_and(|s| s.contains("VIR-FMT-H-002"))),
        "{notes:?}"
    );
    // Extended destination ID: APIC ID 0x123 = 0x23 in 19:12 and 0x1 in 11:5.
    let j = json(
        &["decode", "msi-compat", "--ext-dest-id", "0xfee23020 0x41"],
        None,
    );
    assert_eq!(j["fields"]["dest_id"], 0x123);
}

// VIR-ACT-H-008, VIR-FMT-H-001: the ACTIVATE response a VT-d host returns.
#[test]
fn activate_response_json_names_the_format() {
    let hex = "18 08 e0 fe 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00";
    let j = json(&["decode", "activate-response", hex], None);
    assert_eq!(j["type"], "activate-response");
    assert_eq!(j["fields"]["address_lo"], 0xfee0_0818_u64);
    assert_eq!(j["fields"]["address_hi"], 0);
    assert_eq!(j["fields"]["data"], 0);
    assert_eq!(j["fields"]["format"], 1);
    assert_eq!(j["names"]["format"], "VTD_REMAPPABLE");
    assert_eq!(j["fields"]["reserved2"], 0);
}

// VIR-ALC-H-001: an undefined storage kind decodes (the host answers INVALID_PARAMETER) and is
// flagged; names are accepted by encode.
#[test]
fn wire_semantics_names_and_flags() {
    let j = json(
        &[
            "encode",
            "allocate-request",
            "device_id=0x0300",
            "kind=IMS_DEVICE",
            "index=5",
        ],
        None,
    );
    assert_eq!(j["fields"]["kind"], 3);
    assert_eq!(j["names"]["kind"], "IMS_DEVICE");
    assert_eq!(j["notes"], Json::Array(vec![]));

    let j = json(
        &[
            "decode",
            "allocate-request",
            "00 03 00 00 09 00 00 00 05 00 00 00 00 00 00 00",
        ],
        None,
    );
    assert_eq!(j["fields"]["kind"], 9);
    assert_eq!(j["names"]["kind"], "undefined");
    let notes = j["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .as_str()
            .is_some_and(|s| s.contains("VIR-ALC-H-001"))
    );

    let j = json(
        &[
            "encode",
            "negotiate-request",
            "version=1",
            "features=MSI|MSIX|RESERVATION",
        ],
        None,
    );
    assert_eq!(j["fields"]["features"], 0x13);
    assert_eq!(j["names"]["features"], "MSI|MSIX|RESERVATION");

    let j = json(
        &[
            "encode",
            "doorbell-block",
            "call=SET_AFFINITY",
            "status=TABLE_FULL",
        ],
        None,
    );
    assert_eq!(j["fields"]["call"], 0x12);
    assert_eq!(j["fields"]["status"], 19);
    assert_eq!(j["names"]["status"], "TABLE_FULL");
}

#[test]
fn encode_prints_hex_bytes_in_memory_order() {
    assert_eq!(
        ok(
            &[
                "encode",
                "activate-request",
                "handle=0x10001",
                "flags=RESERVE",
                "target.vector=0xef"
            ],
            None
        ),
        "01 00 01 00 00 00 01 00 00 00 00 00 ef 00 00 00\n"
    );
    assert_eq!(
        ok(&["encode", "vtd-msi", "handle=0x40"], None),
        "18 08 e0 fe 00 00 00 00 00 00 00 00\n"
    );
}

#[test]
fn stdin_input_with_separators() {
    let input = b"09:00:45:00-07:00:00:00\n00_03_04_00 00 00 00 00\n";
    let j = json(&["decode", "vtd-irte", "-"], Some(input));
    assert_eq!(j["fields"]["vector"], 0x45);
    let j = json(&["decode", "vtd-irte"], Some(b"0x403000000000700450009\n"));
    assert_eq!(j["fields"]["sid"], 0x300);
}

#[test]
fn header_prints_the_generated_c_header() {
    let text = ok(&["header"], None);
    let expected = vir_spec::cheader::generate_header().expect("the ABI has a C header");
    assert_eq!(text, expected);
    assert!(text.contains("#ifndef VIR_ABI_H"));
}

/// A malformed input: arguments, stdin, the exit status and a part of the one-line message.
struct Bad {
    args: &'static [&'static str],
    stdin: &'static [u8],
    code: i32,
    message: &'static str,
}

#[test]
fn malformed_inputs_fail_with_one_line() {
    let cases = [
        // Hex syntax.
        Bad { args: &["decode", "vtd-irte", "012"], stdin: b"", code: 1, message: "odd number of hex digits (3)" },
        Bad { args: &["decode", "vtd-irte", "0g"], stdin: b"", code: 1, message: "invalid hex digit 'g' at position 2" },
        Bad { args: &["decode", "vtd-irte", "00 0x12"], stdin: b"", code: 1, message: "mixed" },
        Bad { args: &["decode", "vtd-irte"], stdin: b"", code: 1, message: "no data" },
        Bad { args: &["decode", "vtd-irte", "-"], stdin: b" \n", code: 1, message: "no data" },
        Bad { args: &["decode", "vtd-irte"], stdin: b"\xff\xfe", code: 1, message: "not text" },
        // Lengths.
        Bad { args: &["decode", "vtd-irte", "00"], stdin: b"", code: 1, message: "wrong length: vtd-irte is 16 bytes, got 1" },
        Bad { args: &["decode", "free-request", "00 00 00 00 00 00 00 00 00"], stdin: b"", code: 1, message: "wrong length: free-request is 8 bytes, got 9" },
        Bad { args: &["decode", "msi"], stdin: b"00 00 e0 fe 00 00 00 00 00 00 00", code: 1, message: "wrong length: msi is 12 bytes, got 11" },
        // Integer forms.
        Bad { args: &["decode", "amd-irte32", "0x100000000"], stdin: b"", code: 1, message: "does not fit in 32 bits" },
        Bad { args: &["decode", "vtd-irte", "0x1_0000_0000_0000_0000_0000_0000_0000_0000"], stdin: b"", code: 1, message: "does not fit in 128 bits" },
        Bad { args: &["decode", "msi", "0xfee00000"], stdin: b"", code: 1, message: "expected 2 0x integer(s), got 1" },
        Bad { args: &["decode", "msi", "0xfee00000", "0x100000000"], stdin: b"", code: 1, message: "data 0x100000000 does not fit in 32 bits" },
        Bad { args: &["decode", "query-response", "0x1"], stdin: b"", code: 1, message: "takes hex bytes only" },
        Bad { args: &["decode", "vtd-irte", "0xzz"], stdin: b"", code: 1, message: "'0xzz' is not a 0x hex integer" },
        // Reserved bits and malformed hardware values.
        Bad { args: &["decode", "vtd-irte", "0x1000"], stdin: b"", code: 1, message: "reserved bits" },
        Bad { args: &["decode", "vtd-irte", "--xapic", "0x403000000000700450009"], stdin: b"", code: 1, message: "lowest: bit 32" },
        Bad { args: &["decode", "msi", "0x12345678", "0x0"], stdin: b"", code: 1, message: "outside the 0xFEE interrupt window" },
        Bad { args: &["decode", "vtd-msi", "0xfee00818", "0x10000"], stdin: b"", code: 1, message: "bits 31:16 set while SHV = 1" },
        Bad { args: &["decode", "msi-compat", "0xfee23020", "0x41"], stdin: b"", code: 1, message: "extended destination ID" },
        Bad { args: &["decode", "amd-irte32", "0x80"], stdin: b"", code: 1, message: "GuestMode" },
        Bad { args: &["decode", "posted-desc"], stdin: b"00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", code: 1, message: "reserved bit 258" },
        // Reserved wire fields and undefined bits (VIR-CALL-H-005).
        Bad { args: &["decode", "activate-request", "01 00 00 00 00 00 00 00 05 00 00 00 45 01 00 00"], stdin: b"", code: 1, message: "reserved field target.reserved0 is 0x1" },
        Bad { args: &["decode", "activate-request", "01 00 00 00 00 00 02 00 05 00 00 00 45 00 00 00"], stdin: b"", code: 1, message: "field flags has undefined bits 0x2" },
        Bad { args: &["decode", "doorbell-block", "11 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"], stdin: b"", code: 1, message: "reserved bits 31:16" },
        // Usage: unknown type, unknown field, malformed assignments, options.
        Bad { args: &["decode", "vtd-irt", "00"], stdin: b"", code: 2, message: "unknown type 'vtd-irt'" },
        Bad { args: &["encode", "no-such-type"], stdin: b"", code: 2, message: "unknown type 'no-such-type'" },
        Bad { args: &["encode", "vtd-irte", "vectr=1"], stdin: b"", code: 2, message: "has no field 'vectr'" },
        Bad { args: &["encode", "vtd-irte", "pda=0x1000"], stdin: b"", code: 2, message: "vtd-irte (remapped format) has no field 'pda'" },
        Bad { args: &["encode", "activate-request", "target.apicid=1"], stdin: b"", code: 2, message: "has no field 'target.apicid'" },
        Bad { args: &["encode", "vtd-irte", "vector"], stdin: b"", code: 2, message: "'vector' is not a field=value assignment" },
        Bad { args: &["encode", "vtd-irte", "vector=1", "vector=2"], stdin: b"", code: 2, message: "field 'vector' is assigned twice" },
        Bad { args: &["decode", "activate-request", "--xapic", "00"], stdin: b"", code: 2, message: "option --xapic does not apply to type activate-request" },
        // Out-of-range and malformed values.
        Bad { args: &["encode", "vtd-irte", "vector=256"], stdin: b"", code: 1, message: "field vector: value 0x100 out of range (max 0xff)" },
        Bad { args: &["encode", "allocate-request", "kind=0x100"], stdin: b"", code: 1, message: "field kind: value 0x100 out of range" },
        Bad { args: &["encode", "allocate-request", "kind=MSIXX"], stdin: b"", code: 1, message: "'MSIXX' is not a number or a known name" },
        Bad { args: &["encode", "allocate-request", "reserved1=1"], stdin: b"", code: 1, message: "field reserved1 is reserved and must be 0" },
        Bad { args: &["encode", "activate-request", "flags=2"], stdin: b"", code: 1, message: "undefined bits 0x2" },
        Bad { args: &["encode", "vtd-irte", "--xapic", "dest=256"], stdin: b"", code: 1, message: "exceeds 255 in xAPIC mode" },
        Bad { args: &["encode", "vtd-irte", "im=posted", "pda=0x1001"], stdin: b"", code: 1, message: "not 64-byte aligned" },
        Bad { args: &["encode", "msi-compat", "dest_id=256"], stdin: b"", code: 1, message: "exceeds 255" },
        Bad { args: &["encode", "msi-compat", "delivery_mode=3"], stdin: b"", code: 1, message: "reserved" },
        Bad { args: &["encode", "posted-desc", "pir=0x45,0x100"], stdin: b"", code: 1, message: "field pir: value 0x100 out of range" },
        Bad { args: &["encode", "vtd-irta", "base=0x1001"], stdin: b"", code: 1, message: "not 4 KiB aligned" },
        Bad { args: &["encode", "amd-msi", "index=0x800"], stdin: b"", code: 1, message: "field index: value 0x800 out of range (max 0x7ff)" },
        Bad { args: &["encode", "msi", "address=0x1fee00000"], stdin: b"", code: 1, message: "high address" },
        Bad { args: &["encode", "target", "apic_id=99999999999999999999999999999999999999999"], stdin: b"", code: 1, message: "is not a number" },
    ];
    for case in &cases {
        let out = vir(case.args, Some(case.stdin));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let args = case.args;
        assert_eq!(out.status.code(), Some(case.code), "vir {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked"),
            "vir {args:?} panicked: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "vir {args:?}: not one line: {stderr:?}"
        );
        assert!(stderr.ends_with('\n'), "vir {args:?}: {stderr:?}");
        assert!(stderr.starts_with("vir: error: "), "vir {args:?}: {stderr}");
        assert!(
            stderr.contains(case.message),
            "vir {args:?}: {stderr:?} does not contain {:?}",
            case.message
        );
        assert!(
            out.stdout.is_empty(),
            "vir {args:?} printed to stdout on error"
        );
    }
}

#[test]
fn large_garbage_input_is_an_error_not_a_crash() {
    let big = "00".repeat(1 << 20);
    let out = vir(&["decode", "vtd-irte"], Some(big.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vir: error: wrong length: vtd-irte is 16 bytes, got 1048576\n"
    );
}
