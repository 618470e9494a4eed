use proptest::prelude::*;
use vir_abi::hw::amd::{AmdGuestIrte, AmdRemapIrte};

use super::*;

const DEV: RequesterId = RequesterId(0x0310);
const OTHER: RequesterId = RequesterId(0x0318);

fn iommu(width: IrteWidth) -> AmdIommu {
    let mut u = AmdIommu::new(width);
    u.set_dte(DEV, DteInterrupt::remapped(8)).unwrap(); // 256 entries
    u.set_dte(OTHER, DteInterrupt::remapped(4)).unwrap(); // 16 entries
    u
}

fn remapped(vector: u8, dest: u32) -> u128 {
    AmdIrte128::Remapped(AmdRemapIrte {
        remap_en: true,
        sup_iopf: false,
        int_type: INT_TYPE_FIXED,
        rq_eoi: false,
        dest_mode_logical: false,
        destination: dest,
        vector,
    })
    .encode()
    .unwrap()
}

fn guest(vector: u8, page: u64, is_run: bool) -> u128 {
    AmdIrte128::Guest(AmdGuestIrte {
        remap_en: true,
        sup_iopf: false,
        ga_log_intr: true,
        is_run,
        destination: 0x203,
        ga_tag: 0x0107,
        vector,
        backing_page: page,
    })
    .encode()
    .unwrap()
}

fn msg(index: u32) -> MsiMessage {
    MsiMessage::new(0xFEE0_0000, 0, index)
}

fn program(u: &mut AmdIommu, dev: RequesterId, index: u32, raw: u128) {
    u.write_irte(dev, index, raw).unwrap();
    u.invalidate_interrupt_table(dev);
}

#[test]
fn remapped_128_bit_entry_delivers_its_vector_to_its_destination() {
    let mut u = iommu(IrteWidth::Bits128);
    program(&mut u, DEV, 5, remapped(0x41, 0x1234_5678));
    match u.remap(DEV, msg(5)) {
        AmdOutcome::Remapped(r) => {
            assert_eq!(
                (r.index, r.dest, r.vector),
                (5, HostApicId(0x1234_5678), 0x41)
            );
            assert!(!r.arbitrated && !r.dest_mode_logical);
        }
        o => panic!("{o:?}"),
    }
    // DM address bit and data bits above 10 do not change the lookup.
    assert!(matches!(
        u.remap(DEV, MsiMessage::new(0xFEE0_0004, 0, 5)),
        AmdOutcome::Remapped(_)
    ));
    assert_eq!(u.stats().remapped, 2);
}

#[test]
fn thirty_two_bit_entry_and_its_checks() {
    let mut u = iommu(IrteWidth::Bits32);
    let e = AmdIrte32Entry {
        remap_en: true,
        sup_iopf: false,
        int_type: INT_TYPE_ARBITRATED,
        rq_eoi: false,
        dest_mode_logical: true,
        destination: 0x21,
        vector: 0x30,
    }
    .encode()
    .unwrap();
    program(&mut u, DEV, 1, u128::from(e));
    match u.remap(DEV, msg(1)) {
        AmdOutcome::Remapped(r) => {
            assert_eq!((r.dest, r.vector), (HostApicId(0x21), 0x30));
            assert!(r.arbitrated && r.dest_mode_logical);
        }
        o => panic!("{o:?}"),
    }
    // A 128-bit value does not fit a 32-bit table.
    assert_eq!(
        u.write_irte(DEV, 2, 1 << 64),
        Err(AmdIommuError::EntryTooWide(1 << 64))
    );
    // GuestMode in a 32-bit entry: IO_PAGE_FAULT with RZ.
    program(&mut u, DEV, 3, 0x80 | 1);
    assert_eq!(
        u.remap(DEV, msg(3)),
        AmdOutcome::Abort(AmdAbort {
            code: Some(EVENT_IO_PAGE_FAULT),
            index: Some(3),
            logged: true
        })
    );
    assert!(u.events().last().unwrap().reserved_bit);
}

#[test]
fn entries_take_effect_only_after_invalidate_interrupt_table() {
    let mut u = iommu(IrteWidth::Bits128);
    u.write_irte(DEV, 7, remapped(0x41, 1)).unwrap();
    assert_eq!(u.cached_irte(DEV, 7), Ok(0));
    assert!(matches!(u.remap(DEV, msg(7)), AmdOutcome::Abort(_)));
    // Invalidating another device's table does not help.
    u.invalidate_interrupt_table(OTHER);
    assert!(matches!(u.remap(DEV, msg(7)), AmdOutcome::Abort(_)));
    u.invalidate_interrupt_table(DEV);
    assert!(matches!(u.remap(DEV, msg(7)), AmdOutcome::Remapped(_)));
    // A retarget is used only after the next invalidation; INVALIDATE_IOMMU_ALL works too.
    u.write_irte(DEV, 7, remapped(0x42, 1)).unwrap();
    assert!(matches!(u.remap(DEV, msg(7)), AmdOutcome::Remapped(r) if r.vector == 0x41));
    u.invalidate_all();
    assert!(matches!(u.remap(DEV, msg(7)), AmdOutcome::Remapped(r) if r.vector == 0x42));
}

#[test]
fn each_device_reaches_only_its_own_table() {
    let mut u = iommu(IrteWidth::Bits128);
    program(&mut u, DEV, 2, remapped(0x41, 1));
    // The same index from another device reads that device's (empty) entry.
    assert_eq!(
        u.remap(OTHER, msg(2)),
        AmdOutcome::Abort(AmdAbort {
            code: Some(EVENT_IO_PAGE_FAULT),
            index: Some(2),
            logged: true
        })
    );
    let ev = u.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].device_id, ev[0].interrupt), (OTHER, true));
}

#[test]
fn index_beyond_int_tab_len_is_an_io_page_fault() {
    let mut u = iommu(IrteWidth::Bits128);
    assert_eq!(
        u.remap(OTHER, msg(16)),
        AmdOutcome::Abort(AmdAbort {
            code: Some(EVENT_IO_PAGE_FAULT),
            index: Some(16),
            logged: true
        })
    );
    assert_eq!(
        u.write_irte(OTHER, 16, 1),
        Err(AmdIommuError::IndexOutOfRange {
            device: OTHER,
            index: 16,
            entries: 16
        })
    );
}

#[test]
fn remap_en_clear_faults_unless_sup_iopf() {
    let mut u = iommu(IrteWidth::Bits128);
    program(&mut u, DEV, 1, 0);
    program(&mut u, DEV, 2, 2); // SupIOPF, RemapEn = 0: a vIR reservation
    assert!(matches!(
        u.remap(DEV, msg(1)),
        AmdOutcome::Abort(AmdAbort { logged: true, .. })
    ));
    assert_eq!(
        u.remap(DEV, msg(2)),
        AmdOutcome::Abort(AmdAbort {
            code: Some(EVENT_IO_PAGE_FAULT),
            index: Some(2),
            logged: false
        })
    );
    assert_eq!(
        (u.stats().events_logged, u.stats().events_suppressed),
        (1, 1)
    );
}

#[test]
fn dte_interrupt_control() {
    let mut u = iommu(IrteWidth::Bits128);
    // No DTE, or IV = 0: untranslated.
    let unknown = RequesterId(0x9999);
    assert_eq!(u.remap(unknown, msg(1)), AmdOutcome::PassThrough(msg(1)));
    let mut d = DteInterrupt::remapped(8);
    d.iv = false;
    u.set_dte(DEV, d).unwrap();
    assert_eq!(u.remap(DEV, msg(1)), AmdOutcome::PassThrough(msg(1)));
    // IntCtl forward / abort.
    d.iv = true;
    d.int_ctl = IntCtl::Forward;
    u.set_dte(DEV, d).unwrap();
    assert_eq!(u.remap(DEV, msg(1)), AmdOutcome::PassThrough(msg(1)));
    d.int_ctl = IntCtl::Abort;
    u.set_dte(DEV, d).unwrap();
    assert_eq!(
        u.remap(DEV, msg(1)),
        AmdOutcome::Abort(AmdAbort {
            code: None,
            index: None,
            logged: false
        })
    );
    // Reserved IntCtl or IntTabLen: ILLEGAL_DEV_TABLE_ENTRY.
    for (ctl, len) in [(3, 8), (2, 12)] {
        u.set_dte_raw(DEV, ctl, len);
        assert_eq!(
            u.remap(DEV, msg(1)),
            AmdOutcome::Abort(AmdAbort {
                code: Some(EVENT_ILLEGAL_DEV_TABLE_ENTRY),
                index: None,
                logged: true
            })
        );
    }
    assert_eq!(
        u.set_dte(
            DEV,
            DteInterrupt {
                int_tab_len: 12,
                ..d
            }
        ),
        Err(AmdIommuError::IntTabLen(12))
    );
    // Not in the interrupt window.
    assert_eq!(
        u.remap(DEV, MsiMessage::new(0xFED0_0000, 0, 1)),
        AmdOutcome::NotInterrupt
    );
    assert_eq!(
        u.remap(DEV, MsiMessage::new(0xFEE0_0000, 1, 1)),
        AmdOutcome::NotInterrupt
    );
}

#[test]
fn vir_disc_h_001_dte_blocks_unremapped_interrupts_only_with_every_pass_bit_clear() {
    let d = DteInterrupt::remapped(11);
    assert!(d.blocks_unremapped());
    assert_eq!(d.entries(), Some(2048));
    for f in [
        |d: &mut DteInterrupt| d.init_pass = true,
        |d: &mut DteInterrupt| d.eint_pass = true,
        |d: &mut DteInterrupt| d.nmi_pass = true,
        |d: &mut DteInterrupt| d.lint0_pass = true,
        |d: &mut DteInterrupt| d.lint1_pass = true,
        |d: &mut DteInterrupt| d.iv = false,
        |d: &mut DteInterrupt| d.int_ctl = IntCtl::Forward,
    ] {
        let mut x = d;
        f(&mut x);
        assert!(!x.blocks_unremapped(), "{x:?}");
    }
}

#[test]
fn guest_mode_posts_into_the_backing_page_and_logs_when_not_running() {
    let mut u = iommu(IrteWidth::Bits128);
    program(&mut u, DEV, 4, guest(0x51, 0x20_3000, false));
    match u.remap(DEV, msg(4)) {
        AmdOutcome::Guest(g) => {
            assert_eq!(
                (g.backing_page, g.vector, g.ga_tag),
                (0x20_3000, 0x51, 0x0107)
            );
            assert_eq!((g.doorbell, g.ga_logged), (None, true));
        }
        o => panic!("{o:?}"),
    }
    assert!(u.vapic_page(0x20_3000).pending(0x51));
    assert_eq!(u.take_ga_log(), vec![0x0107]);
    // Running: the doorbell of the destination, no GA log.
    program(&mut u, DEV, 4, guest(0x52, 0x20_3000, true));
    match u.remap(DEV, msg(4)) {
        AmdOutcome::Guest(g) => {
            assert_eq!((g.doorbell, g.ga_logged), (Some(HostApicId(0x203)), false));
        }
        o => panic!("{o:?}"),
    }
    assert!(u.take_ga_log().is_empty());
    assert_eq!(u.vapic_page_mut(0x20_3000).take_pending(), vec![0x51, 0x52]);
    assert!(!u.vapic_page(0x20_3000).pending(0x51));
    assert_eq!(u.stats().guest_posted, 2);
}

#[test]
fn event_log_is_bounded() {
    let mut u = iommu(IrteWidth::Bits128);
    for _ in 0..EVENT_LOG_CAPACITY + 3 {
        u.remap(DEV, msg(0));
    }
    assert_eq!(u.events().count(), EVENT_LOG_CAPACITY);
    assert_eq!(u.event_overflows(), 3);
}

proptest! {
    #[test]
    fn remap_is_total(width in prop::bool::ANY, raw in any::<u128>(), rid in any::<u16>(),
                      lo in any::<u32>(), hi in any::<u32>(), data in any::<u32>()) {
        let width = if width { IrteWidth::Bits128 } else { IrteWidth::Bits32 };
        let mut u = AmdIommu::new(width);
        let dev = RequesterId(rid);
        u.set_dte(dev, DteInterrupt::remapped(11)).unwrap();
        let raw = if width == IrteWidth::Bits32 { raw & 0xFFFF_FFFF } else { raw };
        program(&mut u, dev, data & 0x7FF, raw);
        let _ = u.remap(dev, MsiMessage::new(lo, hi, data));
        let _ = u.remap(dev, MsiMessage::new(0xFEE0_0000, 0, data));
    }
}
