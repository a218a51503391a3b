//! CPU of the whole user-space offer path, without I/O: a request frame as the XDP backend
//! receives it (Ethernet/IPv4/UDP around a captured PXE DISCOVER, a new client MAC each time out
//! of 1,000) → the service (interface check, the core, stats, the node table and metrics, the
//! decision's log line at the shipped `info` level) → the reply frame as it goes on the TX ring
//! (`FrameAnswerer::answer`, the function the XDP backend runs for every frame).
//!
//! `cargo bench -p boot-user --bench offer` prints ns per offer. For instruction counts, which
//! are stable on shared machines, run the built bench under callgrind twice with different
//! counts and divide the difference (BENCHMARKS.md has the command and the results):
//! `XDPBOOT_OFFERS=N valgrind --tool=callgrind --callgrind-out-file=/dev/null <bench binary>`.

#[path = "common/offer_lab.rs"]
mod offer_lab;

use std::time::Instant;

use offer_lab::{CLIENTS, OfferLab};

fn main() {
    let offers: u32 = std::env::var("XDPBOOT_OFFERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    // The daemon's default log level, written nowhere.
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .init();
    let mut lab = OfferLab::new();
    let started = Instant::now();
    let answered = (0..offers).filter(|n| lab.offer(*n)).count();
    let per = started.elapsed().as_nanos() as f64 / f64::from(offers.max(1));
    assert_eq!(answered, offers as usize, "every DISCOVER is answered");
    println!("offer path: {per:.0} ns/offer over {offers} offers ({CLIENTS} clients)");
}
