//! The console: bytes written to the debug port (`0xE9`, QEMU's `-debugcon`), one line at a
//! time under a lock so lines of different vCPUs do not interleave.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::outb;

/// The debug-console port.
pub const CONSOLE_PORT: u16 = 0xE9;

static LOCK: AtomicBool = AtomicBool::new(false);

struct Port;

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            outb(CONSOLE_PORT, b);
        }
        Ok(())
    }
}

/// Writes one formatted line.
pub fn line(args: fmt::Arguments<'_>) {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Port.write_fmt(args);
    outb(CONSOLE_PORT, b'\n');
    LOCK.store(false, Ordering::Release);
}

/// Reports an exception without taking the lock (the vCPU may have faulted while holding it).
pub fn exception(vector: u64, error: u64, rip: u64) {
    let _ = writeln!(
        Port,
        "\nEXCEPTION vector={} error={} rip={}",
        Dec(vector),
        Hex(error),
        Hex(rip)
    );
}

/// `println!` for the console.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::line(format_args!($($arg)*)) };
}

/// An integer printed in decimal without `core`'s precompiled integer formatting (which uses SSE
/// instructions the emulator of some KVMs cannot run; see `.cargo/config.toml`).
pub struct Dec(pub u64);

/// An integer printed as `0x…` hexadecimal, like [`Dec`].
pub struct Hex(pub u64);

fn digits(f: &mut fmt::Formatter<'_>, mut v: u64, base: u64, prefix: &str) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut n = 0;
    loop {
        let d = (v % base) as u8;
        buf[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n += 1;
        v /= base;
        if v == 0 {
            break;
        }
    }
    f.write_str(prefix)?;
    for &b in buf[..n].iter().rev() {
        f.write_char(char::from(b))?;
    }
    Ok(())
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        digits(f, self.0, 10, "")
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        digits(f, self.0, 16, "0x")
    }
}
