//! Harness for xdpboot's integration tests: private network namespaces, the daemon and a site
//! DHCP server (dnsmasq) running inside them, and a DHCP probe client that speaks like PXE
//! firmware. [`xdp`] holds the XDP side: attached programs, `xdpboot stats`, a stand-in for
//! another tool's XDP program, raw frames, VLAN support.
//!
//! Rules every test here keeps (see DESIGN.md, "Test lab facts"):
//! - Traffic stays inside namespaces the test made itself; addresses come from 198.18.0.0/15.
//! - Everything made is removed by a guard's `Drop`, also when the test panics: [`NetNs`]
//!   deletes its namespace (and with it every link inside), [`ChildGuard`] kills its process,
//!   [`TempDir`] removes its files. Links are only ever created inside our own namespaces, so
//!   they die with them and never touch the host's namespace.
//! - Names cannot collide with a parallel test or another run: namespaces and temp dirs are
//!   called `xbt<pid>-<salt>-<n><role>`, with a per-process counter `n` (creation fails rather
//!   than share); interface names live inside those private namespaces and can stay short and
//!   fixed (`eth0`, `br0`). Devices the XDP backend serves also get interface indexes of their
//!   own ([`unique_ifindex`]): indexes repeat across namespaces, but BPF links are system-wide.
//! - Every wait has a deadline.
//! - Children get SIGKILL when the test process dies (PR_SET_PDEATHSIG). A test process killed
//!   outright (SIGKILL, ^C) cannot run its guards, so its namespaces stay behind; remove them
//!   with `ip netns list | grep -o '^xbt<pid>-[^ ]*' | xargs -rn1 ip netns del`.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::dhcpv4::{self, option};
use boot_common::wire::ethernet::{self, VlanTags};
use boot_common::wire::{self, FrameRepr, MacAddr, frame, pxe};
use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

pub mod xdp;

// The IPv6 side: links without IPv4, the site's DHCPv6 server, a DHCPv6 client.
pub mod ipv6;

// The Debian package: building, unpacking, its systemd unit (tests/package.rs, xtask package).
pub mod debian;

// The firmware lab: cached boot files, QEMU clients, and the rack they boot in.
pub mod assets;
pub mod rack;
pub mod vm;

// OpenStack Ironic's own boot files, rendered by the wheel's code (tests/ironic.rs).
pub mod ironic_files;

/// How long a command from this harness (`ip`, ...) may take before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon or dnsmasq may take to bind its ports.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often readiness and exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub use boot_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_SERVER_PORT};

// ---------------------------------------------------------------------------------------------
// Unique names

/// A per-process prefix: the PID, plus a salt from the clock in case another PID namespace
/// shares `/run/netns` with us.
fn process_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("xbt{}-{:03x}", std::process::id(), nanos & 0xfff)
    })
}

/// A number unique within this process: namespace names, xids and MACs use it.
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Commands with deadlines

/// Runs a command to completion within `timeout`; fails with its stderr if it fails.
pub fn run_command(command: &mut Command, timeout: Duration) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command_output(command, timeout)?;
    ensure!(
        output.status.success(),
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command to completion within `timeout` (killed past it) and returns its status and
/// output, whether it succeeded or not.
pub fn command_output(command: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(2));
    }
    // The pipes are small and the process is gone: reading cannot block for long.
    Ok(child.wait_with_output()?)
}

/// Fails clearly when the tests cannot work here at all: not root, or a tool is missing.
pub fn require_lab() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "these integration tests need root (they create network namespaces); \
                 run `cargo test -p boot-tests` as root"
                    .into(),
            );
        }
        for (tool, hint) in [("ip", "iproute2"), ("dnsmasq", "dnsmasq")] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            if !found {
                return Err(format!("`{tool}` not found in PATH: install {hint}"));
            }
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(role: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{}-{}{role}", process_tag(), next_id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A named network namespace (`ip netns add`), deleted on drop. Links inside it go with it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `xbt<pid>-<salt>-<n><role>` with its loopback up.
    pub fn new(role: &str) -> Result<NetNs> {
        require_lab();
        let name = format!("{}-{}{role}", process_tag(), next_id());
        run_command(
            Command::new("ip").args(["netns", "add", &name]),
            COMMAND_TIMEOUT,
        )?;
        let ns = NetNs { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`, the arguments split on whitespace (our names have none).
    pub fn ip(&self, args: &str) -> Result<String> {
        run_command(
            Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args.split_whitespace()),
            COMMAND_TIMEOUT,
        )
    }

    /// Adds `cidr` (e.g. "198.18.0.1/24") to `iface`.
    pub fn add_address(&self, iface: &str, cidr: &str) -> Result<()> {
        self.ip(&format!("addr add {cidr} dev {iface}"))?;
        Ok(())
    }

    /// Creates a bridge named `name` and brings it up. Without STP its ports forward at once.
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        self.ip(&format!(
            "link add {name} type bridge stp_state 0 forward_delay 0"
        ))?;
        self.ip(&format!("link set {name} up"))?;
        Ok(())
    }

    /// `sysctl -w SETTING` (e.g. "net.ipv4.ip_forward=1") for this namespace's network stack.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        run_command(
            Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-qw", setting]),
            COMMAND_TIMEOUT,
        )
        .with_context(|| format!("sysctl {setting} in {}", self.name))?;
        Ok(())
    }

    /// Puts `port` into `bridge`.
    pub fn attach(&self, port: &str, bridge: &str) -> Result<()> {
        self.ip(&format!("link set {port} master {bridge} up"))?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets `f` creates belong to the
    /// namespace for their whole life, also after the thread has ended.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send,
        T: Send,
    {
        let path = Path::new("/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        thread::scope(|scope| {
            let worker = scope.spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {}", self.name))?;
                f()
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `program args…` inside this namespace (`ip netns exec`), its stdout and stderr
    /// going to `log`.
    pub fn spawn(
        &self,
        label: &str,
        program: &Path,
        args: &[&OsStr],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<ChildGuard> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec. It
        // kills the process should this test process die without running its guards (the
        // signal follows the spawning thread, which is the test that owns the guard).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {label} ({})", program.display()))?;
        Ok(ChildGuard {
            child,
            label: label.to_owned(),
            log,
        })
    }

    /// Runs `program args…` inside this namespace to completion (`ip netns exec`) and returns
    /// its stdout.
    pub fn exec(&self, program: &Path, args: &[&str]) -> Result<String> {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .arg(program)
                .args(args)
                .env("RUST_BACKTRACE", "0"),
            COMMAND_TIMEOUT,
        )
    }

    /// How many UDP sockets in this namespace are bound to `port` (any address). A server is
    /// ready once the count grows: two servers may share port 67 in one namespace.
    pub fn udp_sockets_on(&self, port: u16) -> Result<usize> {
        self.run(|| {
            // /proc/thread-self/net is this thread's namespace; /proc/self/net would be the
            // main thread's.
            let table = std::fs::read_to_string("/proc/thread-self/net/udp")?;
            let wanted = format!(":{port:04X}");
            Ok(table
                .lines()
                .skip(1)
                .filter(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .is_some_and(|local| local.ends_with(&wanted))
                })
                .count())
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run_command(
            Command::new("ip").args(["netns", "del", &self.name]),
            COMMAND_TIMEOUT,
        ) {
            eprintln!(
                "warning: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up. Created inside `a`, so it never exists
/// in the host's namespace; it disappears with either namespace.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    veth_with_index(a, a_if, None, b, b_if)
}

/// [`veth`], with `a_if` given the interface index `index` (see [`unique_ifindex`]).
pub fn veth_with_index(
    a: &NetNs,
    a_if: &str,
    index: Option<u32>,
    b: &NetNs,
    b_if: &str,
) -> Result<()> {
    let index = index.map_or(String::new(), |i| format!("index {i}"));
    a.ip(&format!(
        "link add {a_if} {index} type veth peer name {b_if} netns {}",
        b.name()
    ))?;
    a.ip(&format!("link set {a_if} up"))?;
    b.ip(&format!("link set {b_if} up"))?;
    Ok(())
}

/// An interface index no other test or process is likely to use. Indexes are per namespace,
/// so every fresh namespace numbers its first link 2; but BPF links, which hold XDP programs,
/// are system-wide and name their interface by index alone. Giving each served device its own
/// index keeps a tool that looks links up by index (as `xdpboot run --force` does, see
/// `tests/xdp_backend.rs`) from confusing our devices with anyone else's.
pub fn unique_ifindex() -> u32 {
    let pid = u64::from(std::process::id());
    let n = u64::from(next_id()) & 0xfff;
    // Above the small numbers namespaces hand out, below i32::MAX.
    (((pid << 12) | n) % 2_000_000_000 + 100_000) as u32
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A process started by [`NetNs::spawn`]; stopped (SIGTERM, then SIGKILL) on drop. When the
/// test is failing, its log is printed so the failure explains itself.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    label: String,
    log: PathBuf,
}

impl ChildGuard {
    /// The process id (`ip netns exec` execs the program: it is the program's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails, with the log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); its log:\n{}", self.label, self.log());
        }
        Ok(())
    }

    /// Sends `signal` to the process. (`ip netns exec` execs the program: the pid is its own.)
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .with_context(|| format!("sending {signal} to {}", self.label))
    }

    /// Waits for the process to exit on its own; fails if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still running after {timeout:?}; its log:\n{}",
                    self.label,
                    self.log()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls `ready` until it holds, the process exits, or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if ready()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not {what} after {timeout:?}; its log:\n{}",
                    self.label,
                    self.log()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}----- end of {} log -----",
                self.label,
                self.log.display(),
                self.log(),
                self.label
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// The `xdpboot` binary of the same build profile as this test executable
/// (`target/<profile>/xdpboot` next to `target/<profile>/deps/`), or `$XDPBOOT_BIN`.
pub fn xdpboot_binary() -> PathBuf {
    daemon_binary(
        "XDPBOOT_BIN",
        None,
        "run `cargo build -p boot-user` first (with the same profile as the tests)",
    )
}

/// The release build of `xdpboot` (`target/release/xdpboot`, as `cargo xtask test` builds it
/// before the tests), or `$XDPBOOT_RELEASE_BIN`: for tests that judge the daemon's speed as it
/// ships, not a debug build's.
pub fn xdpboot_release_binary() -> PathBuf {
    daemon_binary(
        "XDPBOOT_RELEASE_BIN",
        Some("release"),
        "run `cargo build --release -p boot-user --bin xdpboot` first (cargo xtask test does)",
    )
}

/// `$env`, or `target/<profile>/xdpboot`: the test executable's own profile, or `profile`.
fn daemon_binary(env: &str, profile: Option<&str>, hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let binary = match (profile, profile_dir.parent()) {
        (Some(profile), Some(target)) => target.join(profile).join("xdpboot"),
        _ => profile_dir.join("xdpboot"),
    };
    assert!(
        binary.is_file(),
        "{} is missing: {hint}, or point {env} at the binary",
        binary.display()
    );
    warn_if_stale(&binary);
    binary
}

/// Says so (shown with a failing test's output) when the daemon's sources are newer than the
/// binary under test: the tests would be judging old code.
fn warn_if_stale(binary: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["boot-user/src", "boot-user/config", "boot-common/src"] {
        if newest_file_under(&workspace.join(dir)).is_some_and(|t| t > built) {
            eprintln!(
                "warning: {} is older than {dir}: run `cargo build -p boot-user` to test the \
                 current sources",
                binary.display()
            );
        }
    }
}

/// The newest modification time of any file under `dir`.
fn newest_file_under(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file_under(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(time);
    }
    newest
}

/// `xdpboot run` inside a namespace.
#[derive(Debug)]
pub struct Daemon {
    pub child: ChildGuard,
}

/// The UDP backend's arguments, which [`Daemon::start`] and [`Daemon::spawn`] use.
const UDP_BACKEND: &[&str] = &["--backend", "udp"];

impl Daemon {
    /// Starts the daemon with the UDP backend on `interfaces` with `config` and waits until
    /// both its ports are bound: from then on requests queue in its sockets and are answered.
    pub fn start(ns: &NetNs, interfaces: &[&str], config: &Path, log: PathBuf) -> Result<Daemon> {
        let before = (
            ns.udp_sockets_on(DHCP_SERVER_PORT)?,
            ns.udp_sockets_on(PXE_SERVER_PORT)?,
        );
        let mut child = Daemon::spawn(ns, interfaces, config, log)?;
        child.wait_until("listening on ports 67 and 4011", STARTUP_TIMEOUT, || {
            Ok(ns.udp_sockets_on(DHCP_SERVER_PORT)? > before.0
                && ns.udp_sockets_on(PXE_SERVER_PORT)? > before.1)
        })?;
        Ok(Daemon { child })
    }

    /// Starts `xdpboot run ARGS --interface … --config CONFIG` (ARGS e.g. `--backend xdp
    /// --steer tee`) and waits until it has logged `serving` for every one of `interfaces`.
    /// Both backends log that line only once they answer: the XDP backend after its program
    /// is attached with the AF_XDP sockets registered, the UDP backend after binding its
    /// sockets. (The XDP backend binds no UDP socket: [`Daemon::start`]'s wait would never
    /// end.)
    pub fn start_serving(
        ns: &NetNs,
        interfaces: &[&str],
        config: &Path,
        log: PathBuf,
        args: &[&str],
    ) -> Result<Daemon> {
        let mut child = Daemon::spawn_with(ns, interfaces, config, log.clone(), args)?;
        child.wait_until("serving", STARTUP_TIMEOUT, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(interfaces
                .iter()
                .all(|iface| Serving::find(&text, iface).is_some()))
        })?;
        Ok(Daemon { child })
    }

    /// Starts `xdpboot run --backend udp` without waiting for it, e.g. to watch it refuse.
    pub fn spawn(
        ns: &NetNs,
        interfaces: &[&str],
        config: &Path,
        log: PathBuf,
    ) -> Result<ChildGuard> {
        Daemon::spawn_with(ns, interfaces, config, log, UDP_BACKEND)
    }

    /// Starts `xdpboot run ARGS --interface … --config CONFIG` without waiting for it.
    pub fn spawn_with(
        ns: &NetNs,
        interfaces: &[&str],
        config: &Path,
        log: PathBuf,
        args: &[&str],
    ) -> Result<ChildGuard> {
        let mut argv: Vec<&OsStr> = vec!["run".as_ref()];
        argv.extend(args.iter().map(OsStr::new));
        for iface in interfaces {
            argv.push("--interface".as_ref());
            argv.push(iface.as_ref());
        }
        argv.push("--config".as_ref());
        argv.push(config.as_os_str());
        ns.spawn(
            "xdpboot",
            &xdpboot_binary(),
            &argv,
            // No backtraces in the log: an error should read as the operator sees it.
            &[
                ("RUST_LOG", "info,xdpboot=debug"),
                ("NO_COLOR", "1"),
                ("RUST_BACKTRACE", "0"),
            ],
            log,
        )
    }

    pub fn log(&self) -> String {
        self.child.log()
    }

    /// What the daemon's `serving` line says about `iface`, once it has logged one.
    pub fn serving(&self, iface: &str) -> Option<Serving> {
        Serving::find(&self.log(), iface)
    }
}

/// The daemon's `serving` line for one interface: `xdpboot: serving iface=eth0 device=eth0
/// backend="xdp" mode=driver steer=Tee queues=1` (the UDP backend logs `iface` and `backend`
/// only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub backend: String,
    /// The device the XDP program is attached to: the interface itself, or a VLAN
    /// sub-interface's parent.
    pub device: Option<String>,
    /// The attach mode in use: `driver` or `skb`.
    pub mode: Option<String>,
    /// How port-67 boot DISCOVERs are steered: `Tee` or `Redirect`.
    pub steer: Option<String>,
}

impl Serving {
    /// The first `serving` line for `iface` in `log`.
    pub fn find(log: &str, iface: &str) -> Option<Serving> {
        let wanted = format!("iface={iface}");
        log.lines().find_map(|line| {
            // The event of the binary's own target, not e.g. the backend's "XDP backend
            // serving" debug line.
            let (_, fields) = line.split_once(" xdpboot: serving ")?;
            let field = |key: &str| {
                fields
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            if !fields.split_whitespace().any(|f| f == wanted) {
                return None;
            }
            Some(Serving {
                backend: field("backend")?,
                device: field("device"),
                mode: field("mode"),
                steer: field("steer"),
            })
        })
    }
}

/// A config for the tests: the TFTP root and HTTP port, everything else the embedded default
/// (HTTPS off: its certificate would be generated under /etc/xdpboot; the URL secret in the
/// test's directory, not /var/lib/xdpboot).
pub fn write_config(path: &Path, tftp_root: &Path, http_port: u16) -> Result<()> {
    let root = tftp_root.parent().unwrap_or(tftp_root);
    let text = format!(
        "[tftp]\nroot = \"{}\"\n\n[http]\nroot = \"{}\"\nport = {http_port}\nhttps_port = 0\n\n\
         [boot]\nsecret_file = \"{}\"\n",
        tftp_root.display(),
        root.display(),
        root.join("url-secret").display(),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// kubernetes-validate (tests/kubernetes.rs), installed by `cargo xtask setup`

/// The kubernetes-validate release `cargo xtask setup` installs from PyPI. Its wheel carries
/// the Kubernetes JSON schemas (1.25 to 1.37, strict and not), so validating needs no network.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The virtualenv (Debian's python3 -m venv) that holds it: `target/venv/kubernetes-validate`
/// under the workspace.
pub fn kubernetes_validate_venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("target/venv/kubernetes-validate")
}

// ---------------------------------------------------------------------------------------------
// The site DHCP server

/// dnsmasq as an address-only DHCP server on one interface (no DNS, no PXE), in the
/// foreground, logging each DHCP exchange.
#[derive(Debug)]
pub struct Dnsmasq {
    pub child: ChildGuard,
}

/// How dnsmasq binds port 67.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `--bind-interfaces`: a socket tied to its interface, shareable with another server.
    Interfaces,
    /// dnsmasq's default: the wildcard address, held alone.
    Wildcard,
}

impl Dnsmasq {
    /// Starts dnsmasq with `--bind-interfaces` and waits until it listens.
    pub fn start(
        ns: &NetNs,
        iface: &str,
        range: (Ipv4Addr, Ipv4Addr),
        dir: &Path,
    ) -> Result<Dnsmasq> {
        Dnsmasq::start_with(ns, iface, range, dir, Binding::Interfaces)
    }

    pub fn start_with(
        ns: &NetNs,
        iface: &str,
        range: (Ipv4Addr, Ipv4Addr),
        dir: &Path,
        binding: Binding,
    ) -> Result<Dnsmasq> {
        Dnsmasq::start_ranges(ns, iface, &[range], dir, binding)
    }

    /// dnsmasq with an address range (a /24) per subnet: its own, and subnets behind relay
    /// agents, which it tells apart by giaddr (RFC 2131 §4.3.1).
    pub fn start_ranges(
        ns: &NetNs,
        iface: &str,
        ranges: &[(Ipv4Addr, Ipv4Addr)],
        dir: &Path,
        binding: Binding,
    ) -> Result<Dnsmasq> {
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--port=0".to_owned(),
            format!("--interface={iface}"),
        ];
        for (low, high) in ranges {
            args.push(format!("--dhcp-range={low},{high},255.255.255.0,1h"));
        }
        args.extend([
            // The ping check delays every first offer by ~3 s (DESIGN.md, test lab facts).
            "--no-ping".to_owned(),
            format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--log-dhcp".to_owned(),
            "--log-facility=-".to_owned(),
        ]);
        if binding == Binding::Interfaces {
            args.push("--bind-interfaces".to_owned());
        }
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let before = ns.udp_sockets_on(DHCP_SERVER_PORT)?;
        let mut child = ns.spawn(
            "dnsmasq",
            Path::new("dnsmasq"),
            &args,
            &[],
            dir.join("dnsmasq.log"),
        )?;
        child.wait_until("listening on port 67", STARTUP_TIMEOUT, || {
            Ok(ns.udp_sockets_on(DHCP_SERVER_PORT)? > before)
        })?;
        Ok(Dnsmasq { child })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests, as firmware sends them

/// A locally administered MAC unique within this process.
pub fn unique_mac() -> MacAddr {
    let id = next_id().to_be_bytes();
    let pid = (std::process::id() as u16).to_be_bytes();
    MacAddr([0x02, pid[0], pid[1], id[1], id[2], id[3]])
}

/// Option 55 as the tests' PXE ROM sends it (PXE 2.1 §2.2.5: 43, 60 and 128–135 among them).
pub const PXE_ROM_PARAMETERS: &[u8] = &[
    1, 3, 6, 12, 15, 17, 43, 54, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135,
];
/// Option 57 of every boot client in tests/data: an Ethernet MTU less the IPv4 and UDP headers.
const MAX_MESSAGE_SIZE: u16 = 1472;
/// iPXE's option 175 (encapsulated options): priority, HTTP (0x13) and DNS (0x12) features, as
/// iPXE builds with HTTP announce them.
const IPXE_FEATURES: [u8; 9] = [0x01, 1, 0, 0x13, 1, 1, 0x12, 1, 1];

/// A DHCP request shaped like a PXE ROM's, iPXE's, UEFI HTTP boot's or a plain client's: the
/// one request builder of the tests and of xtask's load generators. [`BootRequest::write`] puts
/// the BOOTP message into a caller's buffer with the wire layer's [`dhcpv4::Writer`] (nothing
/// allocated, so a generator can write one per packet), [`BootRequest::write_frame`] the whole
/// Ethernet frame around it for an `AF_PACKET` socket.
///
/// Options go out in one fixed order, the load generator's since it was written: 53, 57, 93,
/// 94, 97, 55, 60 (the captured ROMs of tests/data/README.md each order them a little
/// differently; iPXE's is closest), then iPXE's 77 and 175, the client identifier, and a
/// REQUEST's 54 and 50 appended last as iPXE appends them. Short messages are padded with
/// zeroes to the BOOTP minimum of 300 bytes.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub message_type: MessageType,
    pub xid: u32,
    pub mac: MacAddr,
    /// The broadcast bit of `flags`: firmware without an address asks for broadcast replies.
    pub broadcast: bool,
    /// Option 93; `None` leaves it out.
    pub arch: Option<u16>,
    /// Option 60; `None` leaves it out, and options 94 and 97 with it.
    pub vendor_class: Option<String>,
    /// Option 55.
    pub parameter_request_list: &'static [u8],
    /// Option 61 (hardware type 1 and the MAC), as iPXE sends it; EDK2 sends none.
    pub client_id: bool,
    /// Option 77 "iPXE" and iPXE's option 175.
    pub ipxe: bool,
    /// Option 97 (type 0 and this GUID).
    pub guid: [u8; 16],
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 54, for a REQUEST.
    pub server_id: Option<Ipv4Addr>,
    /// Option 50, for a REQUEST in SELECTING state.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 43, raw: a PXE boot-server request's boot item (PXE 2.1 §2.2.5).
    pub vendor_options: Option<Vec<u8>>,
}

impl BootRequest {
    /// Bytes [`BootRequest::write`] needs at most: the size option 57 announces, which the
    /// fields a boot client sends stay far below.
    pub const MAX_LEN: usize = MAX_MESSAGE_SIZE as usize;
    /// Bytes [`BootRequest::write_frame`] needs at most: the message and the headers, with two
    /// VLAN tags.
    pub const MAX_FRAME_LEN: usize = frame::headers_len(ethernet::MAX_TAGS) + Self::MAX_LEN;

    /// A PXE ROM's DISCOVER: option 60 "PXEClient:Arch:0000N:UNDI:002001" (UNDI 3.0, "003000",
    /// for UEFI), 93, 94, 97.
    pub fn pxe(arch: u16) -> BootRequest {
        let (major, minor) = undi(arch);
        BootRequest::with_vendor_class(
            arch,
            format!("PXEClient:Arch:{arch:05}:UNDI:{major:03}{minor:03}"),
        )
    }

    /// A UEFI HTTP-boot DISCOVER: option 60 "HTTPClient:Arch:000NN:UNDI:003000".
    pub fn http(arch: u16) -> BootRequest {
        let (major, minor) = undi(arch);
        BootRequest::with_vendor_class(
            arch,
            format!("HTTPClient:Arch:{arch:05}:UNDI:{major:03}{minor:03}"),
        )
    }

    /// A DISCOVER from a client that is not network booting: no option 60 or 93.
    pub fn plain() -> BootRequest {
        BootRequest {
            arch: None,
            vendor_class: None,
            ..BootRequest::pxe(0)
        }
    }

    fn with_vendor_class(arch: u16, vendor_class: String) -> BootRequest {
        let id = next_id();
        let mut guid = [0u8; 16];
        guid[..4].copy_from_slice(&std::process::id().to_be_bytes());
        guid[12..].copy_from_slice(&id.to_be_bytes());
        BootRequest {
            message_type: MessageType::Discover,
            // Distinct per request and per process, so replies can be told apart.
            xid: (std::process::id() << 16) ^ id,
            mac: unique_mac(),
            // Without it dnsmasq would unicast its offer to the offered address, which the
            // probe does not hold.
            broadcast: true,
            arch: Some(arch),
            vendor_class: Some(vendor_class),
            parameter_request_list: PXE_ROM_PARAMETERS,
            client_id: true,
            ipxe: false,
            guid,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            server_id: None,
            requested_ip: None,
            vendor_options: None,
        }
    }

    /// The same client as iPXE: user class "iPXE" (option 77) and feature options (175).
    pub fn ipxe(mut self) -> BootRequest {
        self.ipxe = true;
        self
    }

    /// The REQUEST the client sends to `server`:4011 after a proxy offer, from `ciaddr`.
    pub fn request_to(mut self, server: Ipv4Addr, ciaddr: Ipv4Addr) -> BootRequest {
        self.message_type = MessageType::Request;
        self.ciaddr = ciaddr;
        self.server_id = Some(server);
        self
    }

    /// The broadcast REQUEST that takes `offered` from the DHCP server `server` (RFC 2131
    /// §4.3.2, SELECTING state: ciaddr 0, options 50 and 54).
    pub fn selecting(mut self, server: Ipv4Addr, offered: Ipv4Addr) -> BootRequest {
        self.message_type = MessageType::Request;
        self.server_id = Some(server);
        self.requested_ip = Some(offered);
        self
    }

    /// The same request as forwarded by a relay agent at `giaddr` (hops 1), without the
    /// broadcast bit: the reply goes to the relay agent either way (RFC 2131 §4.1).
    pub fn relayed_by(mut self, giaddr: Ipv4Addr) -> BootRequest {
        self.giaddr = giaddr;
        self.broadcast = false;
        self
    }

    /// Writes the BOOTP message into `buf` ([`BootRequest::MAX_LEN`] bytes are always enough)
    /// and returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, wire::Error> {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&self.mac.octets());
        let header = dhcpv4::Header {
            op: dhcpv4::BOOTREQUEST,
            htype: dhcpv4::HTYPE_ETHERNET,
            hlen: 6,
            hops: u8::from(!self.giaddr.is_unspecified()),
            xid: self.xid,
            secs: 0,
            flags: if self.broadcast {
                dhcpv4::FLAG_BROADCAST
            } else {
                0
            },
            ciaddr: self.ciaddr,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: self.giaddr,
            chaddr,
            sname: b"",
            file: b"",
        };
        let mut w = dhcpv4::Writer::new(buf, &header)?;
        w.option(option::MESSAGE_TYPE, &[u8::from(self.message_type)])?;
        w.option(option::MAX_MESSAGE_SIZE, &MAX_MESSAGE_SIZE.to_be_bytes())?;
        if let Some(arch) = self.arch {
            w.option(option::CLIENT_ARCH, &arch.to_be_bytes())?;
        }
        if self.vendor_class.is_some() {
            // RFC 4578 §2.2: type 1 (UNDI), major, minor.
            let (major, minor) = undi(self.arch.unwrap_or(0));
            w.option(option::CLIENT_NDI, &[1, major, minor])?;
            w.option(
                option::CLIENT_MACHINE_ID,
                &pxe::client_machine_id_option(&self.guid),
            )?;
        }
        w.option(option::PARAMETER_REQUEST_LIST, self.parameter_request_list)?;
        if let Some(vendor_class) = &self.vendor_class {
            w.option(option::VENDOR_CLASS, vendor_class.as_bytes())?;
        }
        if self.ipxe {
            // iPXE sends the bare string (src/net/udp/dhcp.c, DHCP_USER_CLASS_ID).
            w.option(option::USER_CLASS, pxe::IPXE_USER_CLASS)?;
            w.option(option::IPXE_ENCAPSULATED, &IPXE_FEATURES)?;
        }
        if self.client_id {
            w.option_parts(
                option::CLIENT_ID,
                &[&[dhcpv4::HTYPE_ETHERNET], &self.mac.octets()],
            )?;
        }
        if let Some(server) = self.server_id {
            w.option(option::SERVER_ID, &server.octets())?;
        }
        if let Some(ip) = self.requested_ip {
            w.option(option::REQUESTED_IP, &ip.octets())?;
        }
        if let Some(vendor_options) = &self.vendor_options {
            w.option(option::VENDOR_SPECIFIC, vendor_options)?;
        }
        Ok(w.finish())
    }

    /// The BOOTP message, for a UDP socket.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![0; Self::MAX_LEN];
        let len = self
            .write(&mut bytes)
            .expect("a boot client's options fit the 1472 bytes of its option 57");
        bytes.truncate(len);
        bytes
    }

    /// How a client without an address sends: from its MAC and 0.0.0.0:68 to every station and
    /// 255.255.255.255:67, with `tags` (outermost first).
    pub fn broadcast_addressing(&self, tags: VlanTags) -> FrameRepr {
        FrameRepr {
            src_mac: self.mac,
            dst_mac: MacAddr::BROADCAST,
            tags,
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT),
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
            ttl: FrameRepr::DEFAULT_TTL,
        }
    }

    /// Writes the request as a whole Ethernet frame, IPv4 and UDP checksums filled in, into
    /// `buf` ([`BootRequest::MAX_FRAME_LEN`] bytes are always enough) and returns its length.
    pub fn write_frame(
        &self,
        buf: &mut [u8],
        addressing: &FrameRepr,
    ) -> Result<usize, wire::Error> {
        let payload = buf
            .get_mut(addressing.headers_len()..)
            .ok_or(wire::Error::BufferTooSmall)?;
        let len = self.write(payload)?;
        frame::emit_udp_frame(buf, addressing, len)
    }

    /// The request broadcast as a whole frame ([`BootRequest::broadcast_addressing`]), for an
    /// `AF_PACKET` socket: the way to send a tag the kernel would not add, or a frame from the
    /// client's own MAC.
    pub fn broadcast_frame(&self, tags: VlanTags) -> Vec<u8> {
        let mut frame = vec![0; Self::MAX_FRAME_LEN];
        let len = self
            .write_frame(&mut frame, &self.broadcast_addressing(tags))
            .expect("a boot client's frame fits MAX_FRAME_LEN");
        frame.truncate(len);
        frame
    }
}

/// Option 94's UNDI version for `arch` (RFC 4578 §2.2): 2.1 from BIOS ROMs, 3.0 from UEFI, as
/// EDK2 sends it (tests/data/README.md).
fn undi(arch: u16) -> (u8, u8) {
    if arch == 0 { (2, 1) } else { (3, 0) }
}

// ---------------------------------------------------------------------------------------------
// Replies

/// One DHCP message as the probe received it: a reply, or (on a server's port) a request.
#[derive(Clone)]
pub struct Received {
    /// IP source address and UDP source port.
    pub from: SocketAddrV4,
    /// IP destination address (IP_PKTINFO): 255.255.255.255 for a broadcast.
    pub to: Ipv4Addr,
    pub message: v4::Message,
    /// Length of the UDP payload.
    pub len: usize,
    pub bytes: Vec<u8>,
}

impl Received {
    pub fn message_type(&self) -> Option<MessageType> {
        self.message.opts().msg_type()
    }

    pub fn server_id(&self) -> Option<Ipv4Addr> {
        match self.message.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    pub fn vendor_class(&self) -> Option<String> {
        match self.message.opts().get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }

    /// Option 43, raw.
    pub fn vendor_options(&self) -> Option<Vec<u8>> {
        match self.message.opts().get(OptionCode::VendorExtensions) {
            Some(DhcpOption::VendorExtensions(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Option 97, raw.
    pub fn machine_id(&self) -> Option<Vec<u8>> {
        match self.message.opts().get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// The BOOTP `file` field (octets 108–235) up to its NUL, read from the wire bytes
    /// (dhcproto keeps the NUL in what it decodes).
    pub fn file(&self) -> String {
        field_str(self.bytes.get(108..236).unwrap_or_default())
    }
}

/// The fields the tests look at, one line per reply, so a failure shows what arrived.
impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.message;
        write!(
            f,
            "{:?} {} -> {} xid={:#x} yiaddr={} siaddr={} giaddr={} broadcast={} opt54={:?} \
             opt60={:?} opt43={:?} file={:?} len={}",
            self.message_type(),
            self.from,
            self.to,
            m.xid(),
            m.yiaddr(),
            m.siaddr(),
            m.giaddr(),
            m.flags().broadcast(),
            self.server_id(),
            self.vendor_class(),
            self.vendor_options(),
            self.file(),
            self.len
        )
    }
}

fn field_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The probe client

/// A UDP socket in a client namespace that sends requests and collects replies, the way PXE
/// firmware would see them.
#[derive(Debug)]
pub struct Probe {
    socket: UdpSocket,
}

impl Probe {
    /// Binds `0.0.0.0:port` in `ns`, tied to `iface` (SO_BINDTODEVICE) with SO_BROADCAST, so
    /// broadcasts leave through `iface` even when it has no address yet.
    pub fn bind(ns: &NetNs, iface: &str, port: u16) -> Result<Probe> {
        let iface = iface.to_owned();
        let socket = ns.run(move || {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_reuse_address(true)?;
            socket.set_broadcast(true)?;
            socket.bind_device(Some(iface.as_bytes()))?;
            // To tell a broadcast reply from a unicast one.
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
            socket
                .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
                .with_context(|| format!("binding UDP port {port} on {iface}"))?;
            Ok(UdpSocket::from(socket))
        })?;
        Ok(Probe { socket })
    }

    /// A DHCP client's socket: port 68 on `iface`.
    pub fn client(ns: &NetNs, iface: &str) -> Result<Probe> {
        Probe::bind(ns, iface, DHCP_CLIENT_PORT)
    }

    pub fn send(&self, request: &BootRequest, to: SocketAddrV4) -> Result<()> {
        self.socket
            .send_to(&request.encode(), to)
            .with_context(|| format!("sending to {to}"))?;
        Ok(())
    }

    /// Broadcasts `request` to 255.255.255.255:67.
    pub fn broadcast(&self, request: &BootRequest) -> Result<()> {
        self.send(
            request,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
        )
    }

    /// Collects BOOTREPLYs (any transaction) until `done` says enough or `window` passes;
    /// returns what arrived, in order.
    pub fn collect(
        &self,
        window: Duration,
        done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        self.collect_op(Opcode::BootReply, window, done)
    }

    /// Collects BOOTREQUESTs, as a server's socket sees them, until `done` says enough or
    /// `window` passes.
    pub fn collect_requests(
        &self,
        window: Duration,
        done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        self.collect_op(Opcode::BootRequest, window, done)
    }

    fn collect_op(
        &self,
        op: Opcode,
        window: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        let deadline = Instant::now() + window;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 2048];
        loop {
            if done(&replies) {
                return Ok(replies);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(replies);
            }
            self.socket.set_read_timeout(Some(deadline - now))?;
            let Some((len, from, to)) = receive(&self.socket, &mut buf)? else {
                continue; // timed out: the loop checks the deadline
            };
            let bytes = buf[..len].to_vec();
            let Ok(message) = v4::Message::decode(&mut Decoder::new(&bytes)) else {
                continue;
            };
            if message.opcode() != op {
                continue;
            }
            replies.push(Received {
                from,
                to,
                message,
                len,
                bytes,
            });
        }
    }

    /// Sends `request` to `to` and collects the replies to it (same xid) until `done` says
    /// enough or `window` passes.
    pub fn exchange(
        &self,
        request: &BootRequest,
        to: SocketAddrV4,
        window: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        self.send(request, to)?;
        let mut mine = Vec::new();
        self.collect(window, |all| {
            mine = all
                .iter()
                .filter(|r| r.message.xid() == request.xid)
                .cloned()
                .collect();
            done(&mine)
        })?;
        Ok(mine)
    }
}

/// One datagram: length, source, destination address. `None` when the read timed out.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Result<Option<(usize, SocketAddrV4, Ipv4Addr)>> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = match recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) {
        Ok(msg) => msg,
        // SO_RCVTIMEO expired.
        Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let from = msg.address.context("datagram without a source address")?;
    let mut to = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
            to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
        }
    }
    let to = to.context("datagram without IP_PKTINFO")?;
    Ok(Some((
        msg.bytes,
        SocketAddrV4::new(from.ip(), from.port()),
        to,
    )))
}

/// Replies sent from `server` (any port).
pub fn from_server(replies: &[Received], server: Ipv4Addr) -> Vec<&Received> {
    replies.iter().filter(|r| *r.from.ip() == server).collect()
}

// ---------------------------------------------------------------------------------------------
// Checks the test files share

/// Upper bound for a reply that is due. Replies on a veth take well under a millisecond; the
/// bound only matters when something is broken.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra wait for a reply that must not come, after a later request has been answered (the
/// daemon handles port 67 in arrival order, so by then the first one was decided).
pub const QUIET: Duration = Duration::from_millis(100);
/// BOOTP minimum message size that every reply is padded to (RFC 1542 §2.1, dnsmasq).
pub const MIN_REPLY_LEN: usize = 300;
/// Option 43 for BIOS PXE ROMs: PXE_DISCOVERY_CONTROL (6) = 8, "boot file in this offer".
pub const BIOS_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// 255.255.255.255:67, where a client without an address sends its DISCOVER.
pub fn broadcast_to_servers() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT)
}

/// What a proxy reply (OFFER on 67 or ACK on 4011) must look like for iPXE and EDK2 to take
/// it, coming from `server`.
pub fn assert_proxy_reply(
    reply: &Received,
    request: &BootRequest,
    kind: MessageType,
    server: Ipv4Addr,
    vendor_class: &str,
    file: &str,
) {
    let m = &reply.message;
    assert_eq!(reply.message_type(), Some(kind), "{reply:#?}");
    assert_eq!(*reply.from.ip(), server, "reply's IP source");
    let port = if kind == MessageType::Offer {
        DHCP_SERVER_PORT
    } else {
        PXE_SERVER_PORT
    };
    assert_eq!(reply.from.port(), port, "reply's UDP source port");
    assert_eq!(
        m.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "a proxy assigns no address"
    );
    assert_eq!(m.siaddr(), server, "siaddr");
    assert_eq!(reply.server_id(), Some(server), "option 54");
    assert_eq!(
        reply.vendor_class().as_deref(),
        Some(vendor_class),
        "option 60"
    );
    assert_eq!(reply.file(), file, "file");
    assert_eq!(m.chaddr()[..6], request.mac.octets(), "chaddr");
    assert_eq!(m.ciaddr(), request.ciaddr, "ciaddr");
    assert_eq!(m.giaddr(), request.giaddr, "giaddr");
    let mut guid = vec![0];
    guid.extend_from_slice(&request.guid);
    assert_eq!(reply.machine_id(), Some(guid), "option 97 echoed");
    assert!(
        reply.len >= MIN_REPLY_LEN,
        "reply is {} bytes; BOOTP wants at least {MIN_REPLY_LEN}",
        reply.len
    );
}

/// A proxy OFFER from `server` for a DISCOVER broadcast on its LAN.
pub fn assert_proxy_offer(
    offer: &Received,
    request: &BootRequest,
    server: Ipv4Addr,
    vendor_class: &str,
    file: &str,
) {
    assert_proxy_reply(
        offer,
        request,
        MessageType::Offer,
        server,
        vendor_class,
        file,
    );
    assert!(offer.message.flags().broadcast(), "broadcast flag");
    assert_eq!(offer.to, Ipv4Addr::BROADCAST, "sent to 255.255.255.255");
    let bios = request.arch == Some(0) && vendor_class == "PXEClient";
    if bios {
        assert_eq!(
            offer.vendor_options().as_deref(),
            Some(&BIOS_VENDOR_OPTIONS[..]),
            "BIOS gets PXE discovery control 8 in option 43"
        );
    } else {
        assert_eq!(
            offer.vendor_options(),
            None,
            "UEFI and HTTP clients get no option 43 (that sends them to 4011)"
        );
    }
}

/// Sends `request` to `to`, then `sentinel`, a request xdpboot certainly answers, the same way.
/// xdpboot handles each port's requests in arrival order, so once the sentinel's answer from
/// `server` is in, `request` has been decided too. After a short grace, returns everything that
/// arrived for `request`.
pub fn replies_once_decided(
    probe: &Probe,
    to: SocketAddrV4,
    request: &BootRequest,
    sentinel: &BootRequest,
    server: Ipv4Addr,
) -> Result<Vec<Received>> {
    replies_once_decided_by(probe, to, request, sentinel, |r| *r.from.ip() == server)
}

/// [`replies_once_decided`] where xdpboot's answer is told by `is_ours` rather than by its
/// source address (a site server on the same host answers from the same address).
pub fn replies_once_decided_by(
    probe: &Probe,
    to: SocketAddrV4,
    request: &BootRequest,
    sentinel: &BootRequest,
    is_ours: impl Fn(&Received) -> bool,
) -> Result<Vec<Received>> {
    probe.send(request, to)?;
    probe.send(sentinel, to)?;
    let sentinel_answered = |r: &[Received]| {
        r.iter()
            .any(|r| r.message.xid() == sentinel.xid && is_ours(r))
    };
    let mut replies = probe.collect(REPLY_TIMEOUT, sentinel_answered)?;
    assert!(
        sentinel_answered(&replies),
        "the follow-up request was not answered within {REPLY_TIMEOUT:?}: {replies:#?}"
    );
    replies.extend(probe.collect(QUIET, |_| false)?);
    replies.retain(|r| r.message.xid() == request.xid);
    Ok(replies)
}

// ---------------------------------------------------------------------------------------------
// Lab topologies

/// Loaders the default policy offers over TFTP; a test TFTP root holds dummies of these.
pub const DEFAULT_LOADERS: &[&str] = &["undionly.kpxe", "ipxe-amd64.efi"];
/// The HTTP port written into test configs (and so into boot URLs).
pub const HTTP_PORT: u16 = 8080;

/// A test TFTP root with dummy `loaders`, and a config pointing at it.
#[derive(Debug)]
pub struct BootFiles {
    pub dir: TempDir,
}

impl BootFiles {
    pub fn new(loaders: &[&str]) -> Result<BootFiles> {
        let dir = TempDir::new("files")?;
        std::fs::create_dir_all(dir.join("tftp"))?;
        for loader in loaders {
            std::fs::write(dir.join("tftp").join(loader), b"dummy loader\n")?;
        }
        write_config(&dir.join("xdpboot.toml"), &dir.join("tftp"), HTTP_PORT)?;
        Ok(BootFiles { dir })
    }

    pub fn tftp_root(&self) -> PathBuf {
        self.dir.join("tftp")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("xdpboot.toml")
    }

    /// Puts a dummy `loader` into the TFTP root.
    pub fn add_loader(&self, loader: &str) -> Result<()> {
        std::fs::write(self.tftp_root().join(loader), b"dummy loader\n")?;
        Ok(())
    }
}

/// Topology A: one provisioning LAN, as in a rack.
///
/// ```text
///   site (dnsmasq, 198.18.0.2/24) ─┐
///   boot (xdpboot, 198.18.0.1/24) ─┼─ br0 in "lan"
///   client (eth0, address optional)┘
/// ```
/// Every interface outside "lan" is called `eth0`. Fields drop in order: processes first, then
/// namespaces (and the links in them), then files.
#[derive(Debug)]
pub struct SiteLan {
    pub daemon: Daemon,
    pub dnsmasq: Dnsmasq,
    pub probe: Probe,
    pub client: NetNs,
    pub boot: NetNs,
    pub site: NetNs,
    pub lan: NetNs,
    pub files: BootFiles,
}

impl SiteLan {
    pub const BOOT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    pub const SITE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    pub const RANGE: (Ipv4Addr, Ipv4Addr) = (
        Ipv4Addr::new(198, 18, 0, 100),
        Ipv4Addr::new(198, 18, 0, 200),
    );

    /// Builds the LAN with the default loaders in the TFTP root; the client has no address
    /// (as firmware before DHCP) and a probe on port 68.
    pub fn start() -> Result<SiteLan> {
        SiteLan::start_with(DEFAULT_LOADERS, None, DHCP_CLIENT_PORT)
    }

    /// Builds the LAN with `loaders` in the TFTP root, `client_addr` (a /24 in 198.18.0.0) on
    /// the client, and the client's probe bound to `probe_port`.
    pub fn start_with(
        loaders: &[&str],
        client_addr: Option<Ipv4Addr>,
        probe_port: u16,
    ) -> Result<SiteLan> {
        let files = BootFiles::new(loaders)?;
        let lan = NetNs::new("lan")?;
        let site = NetNs::new("site")?;
        let boot = NetNs::new("boot")?;
        let client = NetNs::new("client")?;
        lan.add_bridge("br0")?;
        for (port, ns) in [("site", &site), ("boot", &boot), ("client", &client)] {
            veth(&lan, port, ns, "eth0")?;
            lan.attach(port, "br0")?;
        }
        site.add_address("eth0", &format!("{}/24", SiteLan::SITE))?;
        boot.add_address("eth0", &format!("{}/24", SiteLan::BOOT))?;
        if let Some(addr) = client_addr {
            client.add_address("eth0", &format!("{addr}/24"))?;
        }
        let dnsmasq = Dnsmasq::start(&site, "eth0", SiteLan::RANGE, files.dir.path())?;
        let daemon = Daemon::start(
            &boot,
            &["eth0"],
            &files.config(),
            files.dir.join("xdpboot.log"),
        )?;
        let probe = Probe::bind(&client, "eth0", probe_port)?;
        Ok(SiteLan {
            daemon,
            dnsmasq,
            probe,
            client,
            boot,
            site,
            lan,
            files,
        })
    }
}

/// Topology B: one boot server on two subnets, a client on each.
///
/// ```text
///   client_a (eth0) ── eth1 198.18.1.1/24 ┐
///                                         boot (one xdpboot, --interface eth1 --interface eth2)
///   client_b (eth0) ── eth2 198.18.2.1/24 ┘
/// ```
#[derive(Debug)]
pub struct TwoSubnets {
    pub daemon: Daemon,
    pub probe_a: Probe,
    pub probe_b: Probe,
    pub client_a: NetNs,
    pub client_b: NetNs,
    pub boot: NetNs,
    pub files: BootFiles,
}

impl TwoSubnets {
    pub const BOOT_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    pub const BOOT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);

    /// Both subnets served: `xdpboot run --interface eth1 --interface eth2`.
    pub fn start() -> Result<TwoSubnets> {
        TwoSubnets::serving(&["eth1", "eth2"])
    }

    /// The same wiring, with xdpboot serving only `interfaces`.
    pub fn serving(interfaces: &[&str]) -> Result<TwoSubnets> {
        TwoSubnets::serving_with(interfaces, UDP_BACKEND, |_| Ok(()))
    }

    /// The same wiring, `prepare` run on the boot namespace once its links and addresses are
    /// there, then `xdpboot run ARGS` serving `interfaces` (see [`Daemon::start_serving`]).
    pub fn serving_with(
        interfaces: &[&str],
        args: &[&str],
        prepare: impl FnOnce(&NetNs) -> Result<()>,
    ) -> Result<TwoSubnets> {
        let files = BootFiles::new(DEFAULT_LOADERS)?;
        let boot = NetNs::new("boot")?;
        let client_a = NetNs::new("clia")?;
        let client_b = NetNs::new("clib")?;
        // Indexes of their own, as BootHost's (the XDP backend may serve them).
        veth_with_index(&boot, "eth1", Some(unique_ifindex()), &client_a, "eth0")?;
        veth_with_index(&boot, "eth2", Some(unique_ifindex()), &client_b, "eth0")?;
        boot.add_address("eth1", &format!("{}/24", TwoSubnets::BOOT_A))?;
        boot.add_address("eth2", &format!("{}/24", TwoSubnets::BOOT_B))?;
        prepare(&boot)?;
        let daemon = Daemon::start_serving(
            &boot,
            interfaces,
            &files.config(),
            files.dir.join("xdpboot.log"),
            args,
        )?;
        let probe_a = Probe::client(&client_a, "eth0")?;
        let probe_b = Probe::client(&client_b, "eth0")?;
        Ok(TwoSubnets {
            daemon,
            probe_a,
            probe_b,
            client_a,
            client_b,
            boot,
            files,
        })
    }
}

/// Topology C: one server host with xdpboot and, optionally, the site's DHCP server on the
/// same interface, and one client across a veth.
///
/// ```text
///   host: dnsmasq + xdpboot on eth0 (198.18.0.1/24) ─── eth0 client
///   with a VLAN <id>: both on eth0.<id> (198.18.<id>.1/24), the client's probe on its own
///   eth0.<id>; frames between the two eth0s carry the tag
/// ```
/// The host's eth0 has an interface index of its own ([`unique_ifindex`]). The daemon is
/// started by the test ([`BootHost::start_daemon`]), so it can be stopped, killed and started
/// again on the same network. Declare it after the `BootHost`: locals drop
/// in reverse order, so it stops before the namespaces go.
#[derive(Debug)]
pub struct BootHost {
    pub dnsmasq: Option<Dnsmasq>,
    pub probe: Probe,
    pub client: NetNs,
    pub host: NetNs,
    pub files: BootFiles,
    /// The interface xdpboot (and dnsmasq) serve: `eth0` or `eth0.<id>`.
    pub iface: String,
    /// The device the XDP program goes on: `eth0` (a VLAN sub-interface's parent, too).
    pub device: &'static str,
    /// The host's address on `iface`.
    pub server: Ipv4Addr,
}

/// How [`BootHost::new`] builds the host.
#[derive(Debug, Clone, Copy)]
pub struct HostSetup {
    /// dnsmasq beside xdpboot on the same interface, bound as given; `None`: nothing else on
    /// port 67.
    pub site_server: Option<Binding>,
    /// Serve the VLAN sub-interface `eth0.<id>` instead of `eth0`. Its subnet is
    /// `198.18.<id>.0/24`, so the id is at most 255. The kernel must make VLAN devices:
    /// check [`xdp::vlan_devices`] first.
    pub vlan: Option<u8>,
    /// The client's address on the served subnet, as a host number (`198.18.x.<n>`); `None`:
    /// no address, as firmware before DHCP.
    pub client_host: Option<u8>,
    /// The port the client's probe binds: 68, or 67 to play a relay agent.
    pub probe_port: u16,
    /// The interface index of the host's eth0; `None`: one of its own ([`unique_ifindex`]).
    pub ifindex: Option<u32>,
}

impl Default for HostSetup {
    fn default() -> Self {
        HostSetup {
            site_server: None,
            vlan: None,
            client_host: None,
            probe_port: DHCP_CLIENT_PORT,
            ifindex: None,
        }
    }
}

impl BootHost {
    /// The site server's range on the served subnet: .100 to .200.
    pub const RANGE_HOSTS: (u8, u8) = (100, 200);

    /// Builds the namespaces, starts dnsmasq (if asked) and binds the client's probe; no
    /// xdpboot yet.
    pub fn new(setup: HostSetup) -> Result<BootHost> {
        let files = BootFiles::new(DEFAULT_LOADERS)?;
        let host = NetNs::new("host")?;
        let client = NetNs::new("client")?;
        let ifindex = setup.ifindex.unwrap_or_else(unique_ifindex);
        veth_with_index(&host, "eth0", Some(ifindex), &client, "eth0")?;
        // The untagged LAN has an address even when a VLAN is served, so a test can show that
        // it is not answered.
        host.add_address("eth0", "198.18.0.1/24")?;
        let (iface, subnet) = match setup.vlan {
            Some(id) => {
                let iface = format!("eth0.{id}");
                for ns in [&host, &client] {
                    ns.ip(&format!(
                        "link add link eth0 name {iface} type vlan id {id}"
                    ))?;
                    ns.ip(&format!("link set {iface} up"))?;
                }
                host.add_address(&iface, &format!("198.18.{id}.1/24"))?;
                (iface, id)
            }
            None => ("eth0".to_owned(), 0),
        };
        let server = Ipv4Addr::new(198, 18, subnet, 1);
        if let Some(n) = setup.client_host {
            client.add_address(&iface, &format!("198.18.{subnet}.{n}/24"))?;
        }
        let dnsmasq = match setup.site_server {
            Some(binding) => {
                let (low, high) = BootHost::RANGE_HOSTS;
                let range = (
                    Ipv4Addr::new(198, 18, subnet, low),
                    Ipv4Addr::new(198, 18, subnet, high),
                );
                Some(Dnsmasq::start_with(
                    &host,
                    &iface,
                    range,
                    files.dir.path(),
                    binding,
                )?)
            }
            None => None,
        };
        let probe = Probe::bind(&client, &iface, setup.probe_port)?;
        Ok(BootHost {
            dnsmasq,
            probe,
            client,
            host,
            files,
            iface,
            device: "eth0",
            server,
        })
    }

    /// The address of host `n` on the served subnet.
    pub fn address(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.server.octets();
        Ipv4Addr::new(a, b, c, n)
    }

    /// Whether `yiaddr` is in the site server's range.
    pub fn in_range(&self, yiaddr: Ipv4Addr) -> bool {
        let (low, high) = BootHost::RANGE_HOSTS;
        (self.address(low)..=self.address(high)).contains(&yiaddr)
    }

    /// Starts `xdpboot run ARGS --interface <iface>` and waits until it serves (see
    /// [`Daemon::start_serving`]). Each start logs to its own file.
    pub fn start_daemon(&self, args: &[&str]) -> Result<Daemon> {
        Daemon::start_serving(
            &self.host,
            &[&self.iface],
            &self.files.config(),
            self.daemon_log(),
            args,
        )
    }

    /// Starts `xdpboot run ARGS --interface <iface>` without waiting, e.g. to watch it refuse.
    pub fn spawn_daemon(&self, args: &[&str]) -> Result<ChildGuard> {
        Daemon::spawn_with(
            &self.host,
            &[&self.iface],
            &self.files.config(),
            self.daemon_log(),
            args,
        )
    }

    fn daemon_log(&self) -> PathBuf {
        self.files.dir.join(format!("xdpboot-{}.log", next_id()))
    }

    /// The XDP programs on the host's `device`.
    pub fn xdp_programs(&self) -> Result<Vec<xdp::AttachedProgram>> {
        xdp::attached_programs(&self.host, self.device)
    }

    /// `xdpboot stats` for the host's `device`.
    pub fn counters(&self) -> Result<xdp::Counters> {
        xdp::Counters::read(&self.host, self.device)
    }
}

/// The site's DHCP server, started, stopped and restarted under a running xdpboot.
impl BootHost {
    /// Starts dnsmasq on the served interface, bound as `binding`, and waits until it listens
    /// on 67. A server already running is stopped first (a restart).
    pub fn start_site_server(&mut self, binding: Binding) -> Result<()> {
        self.dnsmasq = None;
        let (low, high) = BootHost::RANGE_HOSTS;
        self.dnsmasq = Some(Dnsmasq::start_with(
            &self.host,
            &self.iface,
            (self.address(low), self.address(high)),
            self.files.dir.path(),
            binding,
        )?);
        Ok(())
    }

    /// Broadcasts `request` from the client and returns the site server's address offer and
    /// xdpboot's proxy offer; fails unless exactly one of each came within [`REPLY_TIMEOUT`].
    pub fn site_and_proxy_offers(&self, request: &BootRequest) -> Result<(Received, Received)> {
        let is_address_offer = |reply: &Received| !reply.message.yiaddr().is_unspecified();
        let replies = self
            .probe
            .exchange(request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
                r.iter().any(is_address_offer) && r.iter().any(|r| !is_address_offer(r))
            })?;
        let (site, ours): (Vec<&Received>, Vec<&Received>) =
            replies.iter().partition(|r| is_address_offer(r));
        ensure!(
            (site.len(), ours.len()) == (1, 1),
            "expected the site server's address offer and xdpboot's proxy offer within \
             {REPLY_TIMEOUT:?}, got {replies:#?}"
        );
        let site = site[0];
        ensure!(
            site.message_type() == Some(v4::MessageType::Offer),
            "{site:#?}"
        );
        ensure!(
            *site.from.ip() == self.server,
            "the site server answers from the host"
        );
        ensure!(
            self.in_range(site.message.yiaddr()),
            "the site server's offer is outside its range: {site:#?}"
        );
        Ok((site.clone(), ours[0].clone()))
    }

    /// Broadcasts `request` from the client where only xdpboot answers, and returns its offer.
    pub fn proxy_offer(&self, request: &BootRequest) -> Result<Received> {
        let replies = self
            .probe
            .exchange(request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
                !r.is_empty()
            })?;
        ensure!(
            replies.len() == 1,
            "expected xdpboot's proxy offer within {REPLY_TIMEOUT:?}, got {replies:#?}"
        );
        Ok(replies[0].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_common::wire::UdpFrame;
    use boot_common::wire::ethernet::VlanTag;

    /// The option codes of a message, in the order they were written.
    fn option_codes(bytes: &[u8]) -> Vec<u8> {
        dhcpv4::Packet::new_checked(bytes)
            .expect("a DHCP message")
            .options()
            .map(|item| item.expect("sound options").0)
            .collect()
    }

    #[test]
    fn a_rom_discover_carries_its_options_in_the_order_firmware_sends_them() {
        let discover = BootRequest::pxe(7).encode();
        assert_eq!(option_codes(&discover), [53, 57, 93, 94, 97, 55, 60, 61]);
        let ipxe = BootRequest::pxe(0)
            .ipxe()
            .request_to(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 50));
        assert_eq!(
            option_codes(&ipxe.encode()),
            [53, 57, 93, 94, 97, 55, 60, 77, 175, 61, 54]
        );
        let plain = BootRequest::plain().encode();
        assert_eq!(option_codes(&plain), [53, 57, 55, 61]);
        assert_eq!(plain.len(), dhcpv4::MIN_LEN, "padded to the BOOTP minimum");
    }

    /// dhcproto, a second implementation, reads back what the request was built from.
    #[test]
    fn a_boot_request_reads_back_through_dhcproto_as_it_was_built() {
        let server = Ipv4Addr::new(198, 18, 0, 1);
        let request = BootRequest {
            vendor_options: Some(vec![71, 4, 0x80, 0, 0, 0, 255]),
            requested_ip: Some(Ipv4Addr::new(198, 18, 0, 60)),
            ..BootRequest::pxe(7)
                .ipxe()
                .request_to(server, Ipv4Addr::new(198, 18, 0, 50))
                .relayed_by(Ipv4Addr::new(198, 18, 1, 1))
        };
        let m = v4::Message::decode(&mut Decoder::new(&request.encode())).expect("decodes");
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), request.xid);
        assert_eq!(m.chaddr(), request.mac.octets());
        assert_eq!(m.ciaddr(), request.ciaddr);
        assert_eq!(m.giaddr(), request.giaddr);
        assert_eq!(m.hops(), 1, "one relay agent");
        assert!(
            !m.flags().broadcast(),
            "a relayed request wants no broadcast"
        );
        let opts = m.opts();
        assert_eq!(opts.msg_type(), Some(MessageType::Request));
        let get = |code| opts.get(code).cloned();
        assert_eq!(
            get(OptionCode::MaxMessageSize),
            Some(DhcpOption::MaxMessageSize(1472))
        );
        assert_eq!(
            get(OptionCode::ClientSystemArchitecture),
            Some(DhcpOption::ClientSystemArchitecture(7.into()))
        );
        assert_eq!(
            get(OptionCode::ClientNetworkInterface),
            Some(DhcpOption::ClientNetworkInterface(1, 3, 0))
        );
        let mut machine_id = vec![0];
        machine_id.extend_from_slice(&request.guid);
        assert_eq!(
            get(OptionCode::ClientMachineIdentifier),
            Some(DhcpOption::ClientMachineIdentifier(machine_id))
        );
        assert_eq!(
            get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003000".to_vec()
            ))
        );
        assert_eq!(
            get(OptionCode::UserClass),
            Some(DhcpOption::UserClass(b"iPXE".to_vec()))
        );
        let mut client_id = vec![1];
        client_id.extend_from_slice(&request.mac.octets());
        assert_eq!(
            get(OptionCode::ClientIdentifier),
            Some(DhcpOption::ClientIdentifier(client_id))
        );
        assert_eq!(
            get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(server))
        );
        assert_eq!(
            get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                198, 18, 0, 60
            )))
        );
        assert_eq!(
            get(OptionCode::VendorExtensions),
            Some(DhcpOption::VendorExtensions(vec![
                71, 4, 0x80, 0, 0, 0, 255
            ]))
        );
        match get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(list)) => assert_eq!(
                list.into_iter().map(u8::from).collect::<Vec<_>>(),
                PXE_ROM_PARAMETERS
            ),
            other => panic!("option 55: {other:?}"),
        }
    }

    #[test]
    fn a_broadcast_frame_parses_back_with_its_tag_and_both_checksums_right() {
        let request = BootRequest::http(16);
        let tag = VlanTag {
            tpid: ethernet::ethertype::VLAN_8021Q,
            tci: 100,
        };
        let bytes = request.broadcast_frame(VlanTags::new(&[tag]).expect("one tag"));
        let frame = UdpFrame::parse(&bytes).expect("a UDP frame");
        assert!(frame.verify_checksums());
        assert_eq!(frame.ethernet.src(), request.mac);
        assert!(frame.ethernet.dst().is_broadcast());
        assert_eq!(frame.ethernet.tags().vlan_id(), Some(100));
        assert_eq!(
            frame.src(),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT)
        );
        assert_eq!(frame.dst(), broadcast_to_servers());
        assert_eq!(frame.payload(), request.encode());
    }
}
