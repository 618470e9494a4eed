//! A tiny assembler for the 16-bit real-mode guest programs the KVM tests run.
//!
//! Only the handful of instructions a guest kernel's vIR entry code needs: loading registers,
//! `CPUID`, `OUT` to the doorbell ports, `VMCALL`/`VMMCALL` and `HLT`. Every `0x66` prefix
//! selects the 32-bit operand size in real mode.

/// A 32-bit general-purpose register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// `EAX`.
    Eax,
    /// `ECX`.
    Ecx,
    /// `EDX`.
    Edx,
    /// `EBX`.
    Ebx,
    /// `ESI`.
    Esi,
}

impl Reg {
    const fn code(self) -> u8 {
        match self {
            Reg::Eax => 0,
            Reg::Ecx => 1,
            Reg::Edx => 2,
            Reg::Ebx => 3,
            Reg::Esi => 6,
        }
    }
}

/// Which hypercall instruction the CPU implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallInsn {
    /// Intel `VMCALL` (`0F 01 C1`).
    Vmcall,
    /// AMD `VMMCALL` (`0F 01 D9`).
    Vmmcall,
}

/// Machine code under construction.
#[derive(Debug, Clone, Default)]
pub struct Program {
    code: Vec<u8>,
}

impl Program {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// The machine code.
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }

    /// `mov reg, imm32`.
    pub fn mov_imm(&mut self, reg: Reg, value: u32) -> &mut Self {
        self.code.extend_from_slice(&[0x66, 0xB8 + reg.code()]);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `mov dst, src` (32-bit).
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.code
            .extend_from_slice(&[0x66, 0x89, 0xC0 | src.code() << 3 | dst.code()]);
        self
    }

    /// `mov dx, imm16`: select an I/O port.
    pub fn port(&mut self, port: u16) -> &mut Self {
        self.code.push(0xBA);
        self.code.extend_from_slice(&port.to_le_bytes());
        self
    }

    /// `out dx, eax`.
    pub fn out_eax(&mut self) -> &mut Self {
        self.code.extend_from_slice(&[0x66, 0xEF]);
        self
    }

    /// `cpuid` for `leaf`, subleaf 0.
    pub fn cpuid(&mut self, leaf: u32) -> &mut Self {
        self.mov_imm(Reg::Eax, leaf).mov_imm(Reg::Ecx, 0);
        self.code.extend_from_slice(&[0x0F, 0xA2]);
        self
    }

    /// Write register `reg` to the I/O port `port` (through `EAX`; clobbers `EAX` and `DX`).
    pub fn report(&mut self, port: u16, reg: Reg) -> &mut Self {
        if reg != Reg::Eax {
            self.mov(Reg::Eax, reg);
        }
        self.port(port).out_eax()
    }

    /// Ring the vIR doorbell at `port` for the call block at `block_gpa`: the low half of the GPA
    /// to `port + 0`, then the high half to `port + 4` (which rings).
    pub fn ring_doorbell(&mut self, port: u16, block_gpa: u64) -> &mut Self {
        let lo = block_gpa as u32;
        let hi = (block_gpa >> 32) as u32;
        self.mov_imm(Reg::Eax, lo).port(port).out_eax();
        self.mov_imm(Reg::Eax, hi)
            .port(port.wrapping_add(vir_abi::call::DOORBELL_GPA_HI))
            .out_eax()
    }

    /// The hypercall instruction.
    pub fn hypercall(&mut self, insn: HypercallInsn) -> &mut Self {
        let last = match insn {
            HypercallInsn::Vmcall => 0xC1,
            HypercallInsn::Vmmcall => 0xD9,
        };
        self.code.extend_from_slice(&[0x0F, 0x01, last]);
        self
    }

    /// `hlt`.
    pub fn hlt(&mut self) -> &mut Self {
        self.code.push(0xF4);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_intel_sdm() {
        let mut p = Program::new();
        p.mov_imm(Reg::Eax, 0x5649_0001)
            .mov(Reg::Eax, Reg::Ebx)
            .port(0x5650)
            .out_eax()
            .hypercall(HypercallInsn::Vmcall)
            .hypercall(HypercallInsn::Vmmcall)
            .hlt();
        assert_eq!(
            p.bytes(),
            &[
                0x66, 0xB8, 0x01, 0x00, 0x49, 0x56, // mov eax, 0x56490001
                0x66, 0x89, 0xD8, // mov eax, ebx
                0xBA, 0x50, 0x56, // mov dx, 0x5650
                0x66, 0xEF, // out dx, eax
                0x0F, 0x01, 0xC1, // vmcall
                0x0F, 0x01, 0xD9, // vmmcall
                0xF4, // hlt
            ]
        );
    }

    #[test]
    fn doorbell_rings_low_then_high() {
        let mut p = Program::new();
        p.ring_doorbell(0x5650, 0x1_0000_2000);
        assert_eq!(
            p.bytes(),
            &[
                0x66, 0xB8, 0x00, 0x20, 0x00, 0x00, 0xBA, 0x50, 0x56, 0x66, 0xEF, // low half
                0x66, 0xB8, 0x01, 0x00, 0x00, 0x00, 0xBA, 0x54, 0x56, 0x66, 0xEF, // high half
            ]
        );
    }
}
