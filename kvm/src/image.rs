//! The guest image (`guest-image/`): building it and loading its ELF.
//!
//! The image is a separate cargo workspace (it needs `panic = "abort"` and its own linker
//! script); [`build`] runs `cargo build --release` there and returns the ELF's path. [`Elf`]
//! reads what a VMM needs from it: the `PT_LOAD` segments, the 64-bit entry point (`e_entry`)
//! and the PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of the guest image's workspace in this source tree.
pub fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("guest-image")
}

/// Why the image could not be built or loaded.
#[derive(Debug)]
pub enum ImageError {
    /// `cargo` could not be started.
    Spawn(std::io::Error),
    /// `cargo build` failed; its standard error.
    Build(String),
    /// The ELF could not be read.
    Read(std::io::Error),
    /// The ELF is malformed or not an x86-64 executable; what is wrong.
    Format(&'static str),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot run cargo to build the guest image: {e}"),
            Self::Build(err) => write!(f, "building the guest image failed:\n{err}"),
            Self::Read(e) => write!(f, "cannot read the guest image: {e}"),
            Self::Format(what) => write!(f, "bad guest image ELF: {what}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// Builds the guest image (release profile) and returns the ELF's path.
///
/// The build runs in the image's own workspace with its own target directory; variables a
/// surrounding cargo invocation set for its own build (flags, target directory) are removed.
pub fn build() -> Result<PathBuf, ImageError> {
    let dir = image_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .map_err(ImageError::Spawn)?;
    if !out.status.success() {
        return Err(ImageError::Build(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(dir
        .join("target")
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join("vir-guest-image"))
}

/// One loadable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Size in memory (the part past the file bytes is zero).
    pub mem_size: u64,
    /// The bytes from the file.
    pub data: Vec<u8>,
}

/// What a VMM needs from the image's ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// The 64-bit entry point (`e_entry`).
    pub entry64: u64,
    /// The 32-bit PVH entry point, if the ELF has a `XEN_ELFNOTE_PHYS32_ENTRY` note.
    pub pvh_entry: Option<u32>,
    /// The `PT_LOAD` segments.
    pub segments: Vec<Segment>,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(b: &[u8], at: usize) -> Result<u16, ImageError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ImageError::Format("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ImageError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(ImageError::Format("truncated"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ImageError> {
    Ok(u64::from(u32_at(b, at)?) | (u64::from(u32_at(b, at + 4)?) << 32))
}

fn range(b: &[u8], offset: u64, len: u64) -> Result<&[u8], ImageError> {
    let start = usize::try_from(offset).map_err(|_| ImageError::Format("offset"))?;
    let len = usize::try_from(len).map_err(|_| ImageError::Format("size"))?;
    start
        .checked_add(len)
        .and_then(|end| b.get(start..end))
        .ok_or(ImageError::Format("segment outside the file"))
}

impl Elf {
    /// Reads the ELF file at `path`.
    pub fn read(path: &Path) -> Result<Elf, ImageError> {
        Elf::parse(&std::fs::read(path).map_err(ImageError::Read)?)
    }

    /// Parses an ELF64 little-endian x86-64 executable.
    pub fn parse(b: &[u8]) -> Result<Elf, ImageError> {
        if b.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ImageError::Format("no ELF magic"));
        }
        if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
            return Err(ImageError::Format("not ELF64 little-endian"));
        }
        if u16_at(b, 0x10)? != 2 {
            return Err(ImageError::Format("not an executable (ET_EXEC)"));
        }
        if u16_at(b, 0x12)? != 62 {
            return Err(ImageError::Format("not x86-64"));
        }
        let entry64 = u64_at(b, 0x18)?;
        let phoff = u64_at(b, 0x20)?;
        let phentsize = u64::from(u16_at(b, 0x36)?);
        let phnum = u64::from(u16_at(b, 0x38)?);
        if phentsize < 56 {
            return Err(ImageError::Format("program header entry too small"));
        }
        let mut segments = Vec::new();
        let mut pvh_entry = None;
        for i in 0..phnum {
            let ph = range(b, phoff + i * phentsize, 56)?;
            let kind = u32_at(ph, 0)?;
            let offset = u64_at(ph, 0x08)?;
            let paddr = u64_at(ph, 0x18)?;
            let filesz = u64_at(ph, 0x20)?;
            let memsz = u64_at(ph, 0x28)?;
            match kind {
                PT_LOAD => {
                    if filesz > memsz {
                        return Err(ImageError::Format("segment file size above memory size"));
                    }
                    segments.push(Segment {
                        paddr,
                        mem_size: memsz,
                        data: range(b, offset, filesz)?.to_vec(),
                    });
                }
                PT_NOTE => {
                    let notes = range(b, offset, filesz)?;
                    let mut at = 0usize;
                    while at + 12 <= notes.len() {
                        let namesz = u32_at(notes, at)? as usize;
                        let descsz = u32_at(notes, at + 4)? as usize;
                        let ty = u32_at(notes, at + 8)?;
                        let name_at = at + 12;
                        let desc_at = name_at + namesz.next_multiple_of(4);
                        let name = notes
                            .get(name_at..name_at + namesz)
                            .ok_or(ImageError::Format("note name"))?;
                        if name == b"Xen\0" && ty == XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4 {
                            pvh_entry = Some(u32_at(notes, desc_at)?);
                        }
                        at = desc_at + descsz.next_multiple_of(4);
                    }
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(ImageError::Format("no loadable segment"));
        }
        Ok(Elf {
            entry64,
            pvh_entry,
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_what_is_not_an_x86_64_executable() {
        assert!(matches!(Elf::parse(b""), Err(ImageError::Format(_))));
        assert!(matches!(Elf::parse(b"\x7fELF"), Err(ImageError::Format(_))));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x10] = 3; // ET_DYN
        h[0x12] = 62;
        assert!(matches!(
            Elf::parse(&h),
            Err(ImageError::Format("not an executable (ET_EXEC)"))
        ));
        h[0x10] = 2;
        h[0x36] = 56;
        // No program headers.
        assert!(matches!(
            Elf::parse(&h),
            Err(ImageError::Format("no loadable segment"))
        ));
        // A program header table past the end of the file.
        h[0x20] = 0xF0;
        h[0x38] = 1;
        assert!(matches!(Elf::parse(&h), Err(ImageError::Format(_))));
    }
}
