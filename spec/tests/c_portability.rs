//! `vir_abi.h` where kernel and VMM teams use it: in C++17, in C11 next to the Linux UAPI
//! headers (`linux/kvm.h`, `linux/vfio.h`, included before and after it), and in a Linux kernel
//! module built by kbuild with `W=1`. Each test skips with a printed reason when its compiler
//! or headers are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vir_abi::hw::PostedDescriptor;
use vir_abi::wire::ActivateRequest;
use vir_spec::default_root;

const STRICT: [&str; 4] = ["-Wall", "-Wextra", "-Werror", "-pedantic"];

fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first of `$env`, then `candidates`, that runs.
fn find_tool(env: &str, candidates: &[&str]) -> Option<String> {
    std::env::var(env)
        .ok()
        .into_iter()
        .chain(candidates.iter().map(|s| s.to_string()))
        .find(|t| runs(t))
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn include_dir(root: &Path) -> PathBuf {
    root.join("abi/include")
}

#[test]
fn header_compiles_as_cxx17() {
    let Some(cxx) = find_tool("CXX", &["c++", "g++", "clang++"]) else {
        println!(
            "SKIPPED: no C++ compiler found ($CXX, c++, g++, clang++); vir_abi.h was not checked as C++"
        );
        return;
    };
    let root = default_root();
    let exe = tmp("vir_check_cxx");
    let out = Command::new(&cxx)
        .arg("-std=c++17")
        .args(STRICT)
        .arg("-I")
        .arg(include_dir(&root))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("spec/c/check_cxx.cpp"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cxx}: {e}"));
    check(&format!("{cxx} -std=c++17 on spec/c/check_cxx.cpp"), &out);
    let run = Command::new(&exe).output().expect("run check_cxx");
    check("check_cxx", &run);
    let text = String::from_utf8(run.stdout).expect("ASCII");
    let expected = format!(
        "pi_desc_size {}\npi_desc_align {}\nirte128_size 16\nactivate_request_size {}\n\
         page_size 4096\nerrno_unknown_call 38\nname_success SUCCESS\nnv 66\n",
        PostedDescriptor::SIZE,
        PostedDescriptor::ALIGN,
        core::mem::size_of::<ActivateRequest>(),
    );
    assert_eq!(text, expected);
}

#[test]
fn header_compiles_with_linux_uapi_headers() {
    let Some(cc) = find_tool("CC", &["cc", "gcc", "clang"]) else {
        println!(
            "SKIPPED: no C compiler found ($CC, cc, gcc, clang); vir_abi.h was not checked with the UAPI headers"
        );
        return;
    };
    // The UAPI headers are in the compiler's default include path (linux-libc-dev on Debian).
    let probe = Command::new(&cc)
        .args(["-E", "-x", "c", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"#include <linux/kvm.h>\n#include <linux/vfio.h>\n")?;
            c.wait()
        });
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIPPED: {cc} finds no <linux/kvm.h>/<linux/vfio.h> (install linux-libc-dev)");
        return;
    }
    let root = default_root();
    for (order, define) in [("before", None), ("after", Some("-DVIR_UAPI_AFTER"))] {
        let exe = tmp(&format!("vir_check_uapi_{order}"));
        let out = Command::new(&cc)
            .arg("-std=c11")
            .args(STRICT)
            .args(define)
            .arg("-I")
            .arg(include_dir(&root))
            .arg("-o")
            .arg(&exe)
            .arg(root.join("spec/c/check_uapi.c"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
        check(
            &format!("{cc} -std=c11 with the UAPI headers included {order} vir_abi.h"),
            &out,
        );
        let run = Command::new(&exe).output().expect("run check_uapi");
        check("check_uapi", &run);
        assert_eq!(String::from_utf8_lossy(&run.stdout), "4276092928 1 0\n");
    }
}

/// The kernel build tree: `$VIR_KDIR`, else `/lib/modules/$(uname -r)/build`, else the first
/// `/usr/src/linux-headers-*` with a kbuild Makefile and a `.config` (Debian's
/// `linux-headers-amd64`).
fn kernel_build_dir() -> Option<PathBuf> {
    let usable = |p: &Path| p.join("Makefile").is_file() && p.join(".config").is_file();
    if let Ok(d) = std::env::var("VIR_KDIR") {
        return Some(PathBuf::from(d)).filter(|p| usable(p));
    }
    let release = Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(r) = release {
        let p = PathBuf::from(format!("/lib/modules/{r}/build"));
        if usable(&p) {
            return Some(p);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/src")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-headers-"))
                && usable(p)
        })
        .collect();
    dirs.sort();
    dirs.pop()
}

#[test]
fn header_builds_in_a_kernel_module() {
    let Some(kdir) = kernel_build_dir() else {
        println!(
            "SKIPPED: no kernel build tree ($VIR_KDIR, /lib/modules/$(uname -r)/build, /usr/src/linux-headers-*); \
             install linux-headers-amd64 to build vir_abi.h in a kernel module"
        );
        return;
    };
    if !runs("make") || !runs("gcc") {
        println!("SKIPPED: kbuild needs make and gcc");
        return;
    }
    let root = default_root();
    // kbuild writes its objects next to the sources: build a copy.
    let dir = tmp("vir_kmod_check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("include")).expect("mkdir");
    for f in ["Kbuild", "vir_kmod_check.c"] {
        std::fs::copy(root.join("spec/c/kmod").join(f), dir.join(f)).expect("copy kmod source");
    }
    std::fs::copy(
        root.join("abi/include/vir_abi.h"),
        dir.join("include/vir_abi.h"),
    )
    .expect("copy header");
    let out = Command::new("make")
        .arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", dir.display()))
        .args(["W=1", "modules"])
        .output()
        .expect("run make");
    check(&format!("kbuild in {}", kdir.display()), &out);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !log.contains("warning:"),
        "the kernel module build warned (W=1):\n{log}"
    );
    assert!(
        dir.join("vir_kmod_check.ko").is_file(),
        "no module built:\n{log}"
    );
}
