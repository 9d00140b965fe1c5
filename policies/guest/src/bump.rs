//! A bump allocator for policies.
//!
//! scour runs every call on a fresh instance and discards it afterwards, so
//! nothing needs to be freed: allocation is a pointer increment, and memory
//! comes back when the instance goes. The last allocation can still shrink,
//! grow in place or be freed, which keeps `Vec` and `String` growth cheap.
//! The host's per-call memory cap bounds what a call can use.
//!
//! Enabled by the `bump-allocator` feature. Leave it off for a policy that
//! allocates and frees far more than it keeps.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::null_mut;

const PAGE: usize = 64 * 1024;
/// Grow linear memory at least this much at a time (1 MiB).
const MIN_GROW_PAGES: usize = 16;

pub struct BumpAllocator {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a wasm32 policy instance is single-threaded.
unsafe impl Sync for BumpAllocator {}

impl BumpAllocator {
    pub const fn new() -> Self {
        Self {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    fn grow(&self, size: usize, align: usize) -> Option<usize> {
        let pages = (size + align).div_ceil(PAGE).max(MIN_GROW_PAGES);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return None;
        }
        let region = previous * PAGE;
        // Contiguous with the current region: keep bumping from `next`.
        if region != self.end.get() {
            self.next.set(region);
        }
        self.end.set(region + pages * PAGE);
        Some(region)
    }
}

impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let mut start = self.next.get().next_multiple_of(align);
        if start == 0 || start + size > self.end.get() {
            if self.grow(size, align).is_none() {
                return null_mut();
            }
            start = self.next.get().next_multiple_of(align);
        }
        self.next.set(start + size);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent allocation can be given back.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() && start + new_size <= self.end.get() {
            self.next.set(start + new_size);
            return ptr;
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
