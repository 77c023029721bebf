//! A global allocator that counts the bytes allocated and not yet freed, for the memory
//! tests. Each memory test is a test file of its own, so one process counts one test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

pub static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bytes allocated now, once they stop changing: a worker finishes its work (evicting a
/// completed run, say) a moment after the client sees the result.
pub async fn settled() -> isize {
    let mut last = LIVE.load(Ordering::Relaxed);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = LIVE.load(Ordering::Relaxed);
        if (now - last).abs() < 4096 {
            return now;
        }
        last = now;
    }
    last
}
