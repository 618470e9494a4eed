//! The global allocator: first fit over a free list in a static heap, guarded by a spin lock.
//! Freed blocks go back to the list, merged with free neighbours.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, Ordering};

/// Heap size.
pub const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_SIZE]);
static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

/// A free block: its size and the next free block (address order).
#[repr(C)]
struct Free {
    size: usize,
    next: *mut Free,
}

const MIN_BLOCK: usize = core::mem::size_of::<Free>();
const ALIGN: usize = 16;

/// The allocator.
pub struct Heap {
    lock: AtomicBool,
    head: core::cell::UnsafeCell<*mut Free>,
    ready: core::cell::UnsafeCell<bool>,
}

// SAFETY: every access to `head` and `ready` is made with `lock` held.
unsafe impl Sync for Heap {}

impl Heap {
    /// An empty heap, initialised on first use.
    pub const fn new() -> Self {
        Heap {
            lock: AtomicBool::new(false),
            head: core::cell::UnsafeCell::new(null_mut()),
            ready: core::cell::UnsafeCell::new(false),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut *mut Free) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to `head` and `ready`; the
        // arena is used only through this allocator.
        let r = unsafe {
            if !*self.ready.get() {
                let block = (&raw mut ARENA).cast::<Free>();
                block.write(Free {
                    size: HEAP_SIZE,
                    next: null_mut(),
                });
                *self.head.get() = block;
                *self.ready.get() = true;
            }
            f(&mut *self.head.get())
        };
        self.lock.store(false, Ordering::Release);
        r
    }
}

fn block_size(layout: Layout) -> usize {
    layout.size().max(MIN_BLOCK).next_multiple_of(ALIGN)
}

// SAFETY: blocks handed out are disjoint parts of the arena, aligned to at least `ALIGN` and to
// the layout's alignment, and returned blocks are re-linked exactly once.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = block_size(layout);
        let align = layout.align().max(ALIGN);
        self.with(|head| {
            let mut link: *mut *mut Free = head;
            // SAFETY: every pointer on the list is a free block of the arena (lock held).
            unsafe {
                while !(*link).is_null() {
                    let block = *link;
                    let start = block as usize;
                    let end = start + (*block).size;
                    let aligned = start.next_multiple_of(align);
                    let pad = aligned - start;
                    // Padding in front must itself be a free block (or nothing).
                    if (pad == 0 || pad >= MIN_BLOCK) && aligned + size <= end {
                        let next = (*block).next;
                        let rest = end - (aligned + size);
                        let mut tail = next;
                        if rest >= MIN_BLOCK {
                            let r = (aligned + size) as *mut Free;
                            r.write(Free { size: rest, next });
                            tail = r;
                        }
                        if pad > 0 {
                            (*block).size = pad;
                            (*block).next = tail;
                        } else {
                            *link = tail;
                        }
                        return aligned as *mut u8;
                    }
                    link = &raw mut (*block).next;
                }
            }
            null_mut()
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = block_size(layout);
        self.with(|head| {
            // SAFETY: `ptr` came from `alloc` with this layout, so `size` bytes at `ptr` are
            // ours to re-link; the list stays in address order and neighbours merge.
            unsafe {
                let start = ptr as usize;
                let mut prev: *mut Free = null_mut();
                let mut cur = *head;
                while !cur.is_null() && (cur as usize) < start {
                    prev = cur;
                    cur = (*cur).next;
                }
                let block = ptr.cast::<Free>();
                block.write(Free { size, next: cur });
                if !cur.is_null() && start + size == cur as usize {
                    (*block).size += (*cur).size;
                    (*block).next = (*cur).next;
                }
                if prev.is_null() {
                    *head = block;
                } else if prev as usize + (*prev).size == start {
                    (*prev).size += (*block).size;
                    (*prev).next = (*block).next;
                } else {
                    (*prev).next = block;
                }
            }
        })
    }
}
