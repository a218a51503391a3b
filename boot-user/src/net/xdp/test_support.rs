//! For the XDP tests (program/tests.rs, xsk.rs): what a test does when this host cannot run
//! its subject (no root, no BPF, no namespace, no eBPF object in this build).
//!
//! A test never passes without running its subject (STYLE.md): an unprivileged developer run
//! outside CI may skip, and says so; as root, or under CI, the capability is expected, so the
//! test fails with the reason.

use std::ffi::OsStr;
use std::thread;

use super::{XdpError, XdpProgram};

/// What a test that cannot run here does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unrunnable {
    /// Print that it skipped and return: it passes without having run.
    Skip,
    /// Panic with the reason.
    Fail,
}

impl Unrunnable {
    /// The rule, from its inputs: skipping is for an unprivileged run outside CI only. CI is
    /// the `CI` variable set to `true` (GitHub Actions, GitLab CI) or `1`.
    pub(crate) fn decide(is_root: bool, ci: Option<&OsStr>) -> Unrunnable {
        let under_ci = ci.is_some_and(|value| value == "true" || value == "1");
        if is_root || under_ci {
            Unrunnable::Fail
        } else {
            Unrunnable::Skip
        }
    }

    /// The rule for this process.
    fn here() -> Unrunnable {
        Unrunnable::decide(
            nix::unistd::Uid::effective().is_root(),
            std::env::var_os("CI").as_deref(),
        )
    }

    /// Skips (returns after saying so) or fails (panics) for `test`, which cannot run because
    /// of `reason`.
    #[track_caller]
    pub(crate) fn apply(self, test: &str, reason: &str) {
        match self {
            Unrunnable::Skip => eprintln!("skipping {test}: {reason}"),
            Unrunnable::Fail => panic!(
                "{test} cannot run here: {reason} (only an unprivileged run outside CI may skip)"
            ),
        }
    }
}

/// Called by a test that cannot run its subject here, because of `reason`: returns, after
/// printing that `test` skipped, only in an unprivileged run outside CI; panics otherwise.
#[track_caller]
pub(crate) fn skip_or_fail(test: &str, reason: &str) {
    Unrunnable::here().apply(test, reason);
}

/// The running test's name: the harness names each test's thread after its test (and the
/// helpers that move a test onto a thread of its own pass the name on).
pub(crate) fn current_test() -> String {
    thread::current().name().unwrap_or("this test").to_owned()
}

pub(crate) use super::program::error_chain;

/// Loads the steering program, or returns `None` after [`skip_or_fail`] when this host cannot
/// load BPF programs (not root, BPF refused) or this build has no eBPF object
/// (`AYA_BUILD_SKIP`). Any other failure, a verifier rejection above all, fails the test.
#[track_caller]
pub(crate) fn load_or_skip() -> Option<XdpProgram> {
    let test = current_test();
    if !nix::unistd::Uid::effective().is_root() {
        skip_or_fail(&test, "loading BPF programs needs root");
        return None;
    }
    match XdpProgram::load() {
        Ok(program) => Some(program),
        Err(err @ XdpError::BuiltWithoutObject) => {
            skip_or_fail(&test, &error_chain(&err));
            None
        }
        Err(err) if err.is_bpf_unavailable() => {
            skip_or_fail(
                &test,
                &format!("BPF is unavailable here: {}", error_chain(&err)),
            );
            None
        }
        Err(err) => panic!("{}", error_chain(&err)),
    }
}

#[test]
fn only_an_unprivileged_run_outside_ci_may_skip() {
    let ci = |value: &'static str| Some(OsStr::new(value));
    for (is_root, ci, expected) in [
        (false, None, Unrunnable::Skip),
        (false, ci(""), Unrunnable::Skip),
        (false, ci("false"), Unrunnable::Skip),
        (false, ci("0"), Unrunnable::Skip),
        (false, ci("true"), Unrunnable::Fail),
        (false, ci("1"), Unrunnable::Fail),
        (true, None, Unrunnable::Fail),
        (true, ci("false"), Unrunnable::Fail),
        (true, ci("true"), Unrunnable::Fail),
    ] {
        assert_eq!(
            Unrunnable::decide(is_root, ci),
            expected,
            "root {is_root}, CI {ci:?}"
        );
    }
}

#[test]
fn failing_names_the_test_and_the_reason_and_skipping_returns() {
    Unrunnable::Skip.apply("some_test", "no BPF here");
    let panic = std::panic::catch_unwind(|| Unrunnable::Fail.apply("some_test", "no BPF here"))
        .expect_err("Fail panics");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("some_test") && message.contains("no BPF here"),
        "{message}"
    );
}
