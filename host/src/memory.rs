//! Giving freed heap memory back to the operating system.
//!
//! Compiling a policy runs on Cranelift's worker threads, whose malloc
//! arenas keep the freed scratch memory; a pass's allocations come from
//! other threads and never reuse it. A worker lives on every node, so it
//! returns that memory after compiling and after each pass.

/// Releases free memory held by the allocator (glibc `malloc_trim`).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers, is thread-safe, and only
    // returns unused pages to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
