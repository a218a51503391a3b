//! The offer path allocates nothing (issue 12): once every client of the rack has a row in the
//! node table, answering a PXE DISCOVER frame — parse, classify, policy, reply, the reply
//! frame, stats, metrics, the node table — makes no heap allocation. Counted by a global
//! allocator that wraps the system's. No log subscriber: the daemon's info lines are budgeted
//! (at most 200 a second) and format their fields only when written.

#[path = "../benches/common/offer_lab.rs"]
mod offer_lab;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use offer_lab::{CLIENTS, OfferLab};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn answering_a_known_clients_discover_allocates_nothing() {
    let mut lab = OfferLab::new();
    // Every client once: their rows, metric series and cache entries are made here.
    for n in 0..CLIENTS {
        assert!(lab.offer(n), "client {n} is answered");
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for n in 0..10 * CLIENTS {
        assert!(lab.offer(n), "offer {n}");
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations,
        0,
        "{allocations} heap allocations in {} offers",
        10 * CLIENTS
    );
}
