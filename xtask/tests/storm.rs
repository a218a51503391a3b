//! Boot storms against several xdpboot instances, run the way an operator runs them: the
//! `cargo xtask loadtest` binary itself (`--instances`), in the network namespaces it builds
//! (198.18.100.0/24 and 198.18.102.0/24, removed when it ends), one storm at a time. Bounded:
//! at most 1,000 nodes and a time limit of two minutes. Needs root (namespaces, the XDP backend) and the release build of the
//! daemon (`cargo build --release -p boot-user --bin xdpboot`, as `cargo xtask test` does),
//! which the storm judges as it ships.

use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// One storm at a time: the machine's two cores are the storm's whole budget.
static ONE_STORM: Mutex<()> = Mutex::new(());

/// Runs `xtask loadtest ARGS --xdpboot <release build>` and returns its report; fails with the
/// report when the run failed.
fn loadtest(args: &[&str]) -> String {
    boot_tests::require_lab();
    let _one = ONE_STORM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let xdpboot = boot_tests::xdpboot_release_binary();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("loadtest")
        .args(args)
        .arg("--xdpboot")
        .arg(&xdpboot)
        // These storms check that nodes boot, not how fast: no wait for quiet cores, and the
        // test's own (debug) build of the generator instead of an optimized rebuild of xtask.
        .args(["--settle-secs", "0"])
        .env("XTASK_OPTIMIZED", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running cargo xtask loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "cargo xtask loadtest {} failed ({}) after {:.0?}:\n{stdout}\n{stderr}",
        args.join(" "),
        output.status,
        started.elapsed()
    );
    stdout
}

/// The number in `report` right after `before` (e.g. "Kill: … . " → "41 nodes had …").
fn number_after(report: &str, before: &str, after: &str) -> u64 {
    let start = report
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} is not in the report:\n{report}"))
        + before.len();
    let rest = &report[start..];
    let end = rest
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} does not follow {before:?}:\n{report}"));
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no number between {before:?} and {after:?}:\n{report}"))
}

#[test]
fn every_node_boots_when_one_of_two_instances_is_killed_mid_storm() {
    // 1,000 nodes, 64 in flight from the start (no ramp), so that a second in, whatever the
    // machine's speed, dozens are mid-boot and half of them through the instance that dies.
    // Those mid-transfer from it fail as a ROM would (no answer after its retries) and power
    // on again; --require-all fails the run unless every node booted.
    let report = loadtest(&[
        "--instances",
        "2",
        "--kill-one-after",
        "1",
        "--reboots",
        "2",
        "--nodes",
        "1000",
        "--concurrency",
        "64",
        "--loader-kib",
        "256",
        "--http-nodes",
        "4",
        "--kernel-mib",
        "1",
        "--initrd-mib",
        "8",
        "--time-limit",
        "120",
        "--require-all",
    ]);
    assert!(
        report.contains("1000 of 1000 nodes started, 1000 booted, 0 failed"),
        "{report}"
    );
    // The kill must have hit nodes mid-boot, or the run proved nothing about surviving it.
    let hit = number_after(
        &report,
        "into the storm. ",
        " nodes had a boot attempt fail",
    );
    assert!(hit > 0, "the kill caught no node mid-boot:\n{report}");
    let rebooted = number_after(&report, "from their PXE DISCOVER: ", " of them booted");
    assert_eq!(
        rebooted, hit,
        "every node the kill hit booted again:\n{report}"
    );
}

#[test]
fn prometheus_sums_over_the_instances_match_what_the_storm_did() {
    // Debian's prometheus, which `cargo xtask setup` installs. Missing, the test fails: it
    // never passes without Prometheus having scraped.
    let prometheus = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`prometheus` is not installed: this test scrapes the instances with Debian's \
                 prometheus package (cargo xtask setup installs it)"
            )
        });
    // The loadtest fails unless every comparison agrees; the table is in its report.
    let report = loadtest(&[
        "--instances",
        "2",
        "--prometheus",
        &prometheus.display().to_string(),
        "--nodes",
        "200",
        "--ramp",
        "100",
        "--concurrency",
        "32",
        "--loader-kib",
        "64",
        "--http-nodes",
        "4",
        "--kernel-mib",
        "1",
        "--initrd-mib",
        "4",
        "--time-limit",
        "60",
        "--require-all",
    ]);
    assert!(
        report.contains("### Prometheus: the instances summed"),
        "{report}"
    );
    assert!(!report.contains("**differs**"), "{report}");
}
