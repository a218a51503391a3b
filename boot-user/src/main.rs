//! The `xdpboot` daemon and its command line.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

use boot_common::SteerMode;
use xdpboot::config::{Backend, Config, Steer, XdpMode};
use xdpboot::dhcp::ServerPort;
use xdpboot::dhcp::stats::Stats;
use xdpboot::events::{EventSink, Sink};
use xdpboot::http::scripts::BootContent;
use xdpboot::net::iface::{InterfaceTable, Interfaces};
use xdpboot::net::service::{FsLoaders, Service};
use xdpboot::net::udp::UdpSocket;
use xdpboot::net::udp6::Udp6Socket;
use xdpboot::net::xdp::AttachMode;
use xdpboot::net::xdp::backend::{XdpInterface, XdpSettings};
use xdpboot::net::xdp::program::{ExistingProgram, attached_counters, attached_xdp_on};
use xdpboot::net::xdp::steering::PortWatcher;
use xdpboot::observe::Observer;
use xdpboot::reload::{Decisions, RELOAD_DEBOUNCE, Swap, needs_restart};
use xdpboot::tftp::{Draining, TftpConfig, TftpServer};

#[derive(Parser)]
#[command(
    name = "xdpboot",
    version,
    about = "Network boot beside your DHCP server: proxyDHCP, TFTP for the first stage, HTTP(S) for the rest",
    after_help = "Examples:\n  \
        xdpboot run --interface eth1                  serve PXE clients on eth1 with the embedded default config\n  \
        xdpboot run -i eth1 -i eth2 --backend udp     two provisioning networks, plain UDP sockets\n  \
        xdpboot run --config /etc/xdpboot/xdpboot.toml\n  \
        xdpboot check --config /etc/xdpboot/xdpboot.toml\n  \
        xdpboot check                                 validate and print the embedded default\n  \
        xdpboot stats --interface eth1                the XDP program's verdict counters\n  \
        curl http://127.0.0.1:9180/metrics            metrics; /status is a live page of the nodes booting\n  \
        xdpboot boot -i eth1 vmlinuz initrd.img --cmdline console=ttyS0\n  \
                                                      quick mode: every client boots this kernel\n  \
                                                      (loaders from Debian's ipxe package)\n\n\
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=xdpboot=debug) for per-packet detail.\n\
        SIGTERM or SIGINT stops: new work is refused, and TFTP and HTTP transfers in flight may\n\
        finish for up to [server] drain_secs (default 10); a second signal stops at once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer PXE and HTTP-boot clients on the given interfaces.
    Run {
        /// Interface to serve (repeatable). Replaces `server.interfaces` from the config.
        #[arg(short, long = "interface", value_name = "IF")]
        interfaces: Vec<String>,
        /// Config file, read on top of the embedded default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How requests reach xdpboot. Replaces `server.backend` from the config.
        #[arg(short, long, value_enum)]
        backend: Option<Backend>,
        /// XDP backend: tee or take port-67 boot requests. Replaces `xdp.steer`.
        #[arg(long, value_enum)]
        steer: Option<Steer>,
        /// XDP backend: attach mode. Replaces `xdp.mode`.
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpMode>,
        /// XDP backend: replace an XDP program that is not xdpboot's on the interface.
        #[arg(long)]
        force: bool,
    },
    /// Quick mode: every PXE, iPXE and UEFI HTTP-boot client on the interfaces boots exactly
    /// this kernel with these initrds (in this order), plus its per-node overlay if the config
    /// defines one. No config file needed.
    Boot {
        /// Interface to serve (repeatable).
        #[arg(short, long = "interface", value_name = "IF", required = true)]
        interfaces: Vec<String>,
        /// The kernel every client boots.
        kernel: PathBuf,
        /// Initrds, loaded in this order (the kernel unpacks them in order: later files win).
        initrds: Vec<PathBuf>,
        /// Kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Directory holding the iPXE loaders (undionly.kpxe, ipxe-amd64.efi, …), served over
        /// TFTP and HTTP; replaces `[tftp] root` and `[http] root`. Without it, loaders come
        /// from the roots of the config or, failing that, Debian's `ipxe` package.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Config file for everything else (nodes, overlays, ports), on top of the default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(short, long, value_enum)]
        backend: Option<Backend>,
    },
    /// Print the XDP program's verdict counters of a running xdpboot (needs root).
    Stats {
        /// Interface to read (repeatable); default: every interface with xdpboot attached.
        #[arg(short, long = "interface", value_name = "IF")]
        interfaces: Vec<String>,
    },
    /// Validate a config file (or the embedded default) and print the policy table.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: logs that go to files and journals stay plain.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match Cli::parse().command {
        Command::Check { config } => check(config),
        Command::Stats { interfaces } => stats(interfaces),
        Command::Boot {
            interfaces,
            kernel,
            initrds,
            cmdline,
            root,
            config,
            backend,
        } => {
            for file in std::iter::once(&kernel).chain(&initrds) {
                if !file.is_file() {
                    bail!("{} is not a file", file.display());
                }
            }
            let absolute = |p: &std::path::Path| {
                std::path::absolute(p).with_context(|| format!("{}", p.display()))
            };
            let source = Source {
                path: config,
                overrides: Overrides {
                    interfaces,
                    backend,
                    quick: Some(Quick {
                        kernel: absolute(&kernel)?,
                        initrds: initrds
                            .iter()
                            .map(|p| absolute(p))
                            .collect::<Result<_, _>>()?,
                        cmdline,
                        root: root.as_deref().map(absolute).transpose()?,
                    }),
                    ..Overrides::default()
                },
            };
            start(source, ExistingProgram::Refuse)
        }
        Command::Run {
            interfaces,
            config,
            backend,
            steer,
            xdp_mode,
            force,
        } => {
            let source = Source {
                path: config,
                overrides: Overrides {
                    interfaces,
                    backend,
                    steer,
                    xdp_mode,
                    quick: None,
                },
            };
            let existing = if force {
                ExistingProgram::Replace
            } else {
                ExistingProgram::Refuse
            };
            start(source, existing)
        }
    }
}

/// Threads for blocking work (TFTP's file opens and reads, the port-67 watcher's polls). Each
/// costs a stack and, with glibc, may bring a malloc arena of its own; tokio's default of 512
/// let a boot storm's bursts of TFTP requests start over 200 of them (measured with `cargo
/// xtask loadtest --nodes 20000`, BENCHMARKS.md), where a few keep up: requests beyond these
/// wait in tokio's queue, each holding one of TFTP's `max_transfers` slots.
const MAX_BLOCKING_THREADS: usize = 16;

fn start(source: Source, existing: ExistingProgram) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(source, existing))
}

/// Where the running config comes from: the file (or the embedded default) and what the
/// command line replaces in it, so SIGHUP can read it again the same way.
struct Source {
    path: Option<PathBuf>,
    overrides: Overrides,
}

#[derive(Default)]
struct Overrides {
    interfaces: Vec<String>,
    backend: Option<Backend>,
    steer: Option<Steer>,
    xdp_mode: Option<XdpMode>,
    quick: Option<Quick>,
}

/// Quick mode's kernel, initrds and loader directory.
struct Quick {
    kernel: PathBuf,
    initrds: Vec<PathBuf>,
    cmdline: String,
    root: Option<PathBuf>,
}

impl Source {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = load(self.path.as_deref())?;
        let o = &self.overrides;
        if !o.interfaces.is_empty() {
            config.interfaces = o.interfaces.clone();
        }
        if let Some(backend) = o.backend {
            config.backend = backend;
        }
        if let Some(steer) = o.steer {
            config.xdp.steer = steer;
        }
        if let Some(mode) = o.xdp_mode {
            config.xdp.mode = mode;
        }
        if let Some(quick) = &o.quick {
            config.boot.kernel = Some(quick.kernel.clone());
            config.boot.initrds = quick.initrds.clone();
            config.boot.cmdline = quick.cmdline.clone();
            if let Some(root) = &quick.root {
                config.tftp.root = root.clone();
                config.http.root = root.clone();
            }
        }
        Ok(config)
    }
}

fn stats(names: Vec<String>) -> anyhow::Result<()> {
    let mut out = String::new();
    let names = if names.is_empty() {
        let table = InterfaceTable::read().context("reading the interface table")?;
        table
            .iter()
            .filter(|i| attached_counters(&i.name).is_ok())
            .map(|i| i.name.clone())
            .collect()
    } else {
        names
    };
    if names.is_empty() {
        bail!("no interface has xdpboot's XDP program attached");
    }
    for name in names {
        let counters = attached_counters(&name)
            .with_context(|| format!("reading xdpboot's counters on {name}"))?;
        let programs: Vec<String> = attached_xdp_on(&name)
            .map(|s| {
                s.programs()
                    .map(|(hook, id)| format!("program {id} ({hook:?})"))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(out, "{name}: {}", programs.join(", "));
        for (counter, value) in counters {
            let _ = writeln!(out, "  {:<12} {value}", counter.name());
        }
    }
    emit(&out);
    Ok(())
}

/// Writes command output to stdout; a reader that went away (`xdpboot check | head`) is not
/// an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    // ConfigError's Display already names the file, line and key.
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    })
}

fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut out = String::new();
    let config = load(path.as_deref())?;
    let name = path.map_or("embedded default".to_owned(), |p| p.display().to_string());
    let _ = writeln!(out, "{name}: ok");
    let _ = writeln!(out, "backend: {}", config.backend);
    let _ = writeln!(out, "interfaces: {}", config.interfaces.join(", "));
    let _ = writeln!(
        out,
        "tftp root: {} (port {})",
        config.tftp.root.display(),
        config.tftp.port
    );
    let _ = writeln!(
        out,
        "http root: {} (ports {} / {})",
        config.http.root.display(),
        config.http.port,
        config.http.https_port
    );
    if config.ipv6.enabled {
        let addresses: Vec<String> = config
            .ipv6
            .addresses
            .iter()
            .map(|(name, address)| format!("{name} [{address}]"))
            .collect();
        let _ = writeln!(
            out,
            "ipv6: on (DHCPv6 boot on ports 547 and 4011; URL addresses: {})",
            if addresses.is_empty() {
                "each interface's first global or unique-local".to_owned()
            } else {
                addresses.join(", ")
            }
        );
    } else {
        let _ = writeln!(out, "ipv6: off");
    }
    if config.admin.enabled {
        let _ = writeln!(
            out,
            "admin: http://{} (/metrics, /status, /api/nodes; up to {} nodes for {} s)",
            config.admin.listen,
            config.admin.max_nodes,
            config.admin.node_ttl.as_secs()
        );
    } else {
        let _ = writeln!(out, "admin: off");
    }
    let _ = writeln!(out, "policy (first match wins):");
    out.push_str(&policy_table(&config));
    report_missing_loaders(&config);
    emit(&out);
    Ok(())
}

/// The policy as a table an operator reads: rule, conditions, action, and for the loaders it
/// hands out where each file is served from (the TFTP root or a package, or that it is
/// missing).
fn policy_table(config: &Config) -> String {
    use xdpboot::dhcp::policy::Action;
    let loaders = FsLoaders::new(&config.tftp.root, config.loaders.clone());
    let root = config.tftp.root.canonicalize().ok();
    let source = |file: &str| match loaders.locate(file) {
        Some(path) if root.as_ref().is_some_and(|root| path.starts_with(root)) => {
            format!("{file}: {}", path.display())
        }
        Some(path) => format!("{file}: {} (package)", path.display()),
        None => format!("{file}: MISSING"),
    };
    let mut rows = vec![["RULE".to_owned(), "WHEN".to_owned(), "ACTION".to_owned()]];
    for rule in &config.policy.rules {
        let mut action = rule.action.to_string();
        match &rule.action {
            Action::Tftp(file) => match loaders.locate(file) {
                Some(path) => {
                    let _ = write!(action, "  ({})", path.display());
                }
                None => action.push_str("  (MISSING: clients matching this rule are not answered)"),
            },
            Action::Loader(loader) => {
                // Each arch the rule can match: the first stage and what it fetches next.
                let arches = loader
                    .arches()
                    .filter(|arch| rule.matches.arch.as_ref().is_none_or(|a| a.contains(arch)));
                let mut files = Vec::new();
                for arch in arches {
                    let stages = loader.first_stage(arch).into_iter().chain(loader.next_stages(arch).iter().copied());
                    let stages: Vec<String> = stages.map(source).collect();
                    files.push(format!("{}: {}", arch.name(), stages.join(", ")));
                }
                let _ = write!(action, "  ({})", files.join("; "));
            }
            Action::Local => action.push_str(
                "  (PXE ROMs: a local-boot menu; iPXE: local.ipxe, which exits; UEFI HTTP boot: a URL that answers 404)",
            ),
            Action::Http(_) | Action::Silent => {}
        }
        rows.push([rule.name.clone(), rule.matches.to_string(), action]);
    }
    let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
    let (rule_width, when_width) = (width(0), width(1));
    let mut table = String::new();
    for [rule, when, action] in &rows {
        let _ = writeln!(
            table,
            "  {rule:<rule_width$}  {when:<when_width$}  {action}"
        );
    }
    table
}

/// A loader named by the policy but missing from the TFTP root is reported at start (and
/// again per request, by the core): its clients will not be answered until it appears.
fn report_missing_loaders(config: &Config) {
    let loaders = FsLoaders::new(&config.tftp.root, config.loaders.clone());
    let root = config.tftp.root.canonicalize().ok();
    for (rule, file) in config.tftp_loaders() {
        match loaders.locate(file) {
            Some(path) if !root.as_ref().is_some_and(|root| path.starts_with(root)) => {
                tracing::info!(
                    rule,
                    file,
                    from = %path.display(),
                    "loader not in the TFTP root: serving the package's"
                )
            }
            Some(_) => {}
            None => tracing::warn!(
                rule,
                file,
                root = %config.tftp.root.display(),
                "loader missing from the TFTP root and the packages searched: clients matching \
                 this rule will not be answered (install its package: ipxe, shim-signed, \
                 grub-efi-amd64-signed, pxelinux, syslinux-common; or put it in the root)"
            ),
        }
    }
}

async fn run(source: Source, existing: ExistingProgram) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM during start-up must still detach what was attached.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let config = source.load()?;
    if config.interfaces.is_empty() {
        bail!(
            "no interface to serve: name one with --interface IF (or server.interfaces in the config)"
        );
    }
    let (interfaces, watcher) = Interfaces::new().context("reading the interface table")?;
    let table = interfaces.snapshot();
    for name in &config.interfaces {
        let Some(iface) = table.by_name(name) else {
            bail!("interface {name} does not exist");
        };
        if iface.addrs.is_empty() && !config.ipv6.enabled {
            tracing::warn!(iface = %name, "interface has no IPv4 address yet: its clients are not answered until it gets one");
        }
        if config.ipv6.enabled
            && !config.ipv6.addresses.contains_key(name)
            && iface.url_address6().is_none()
        {
            tracing::warn!(iface = %name, "[ipv6] is on, but the interface has no global or unique-local IPv6 address yet (and [ipv6] addresses names none): its DHCPv6 clients are not answered until it gets one");
        }
    }
    report_missing_loaders(&config);

    let XdpBackends {
        xdp,
        udp: udp_names,
        watcher: port_watcher,
    } = open_backends(&config, &table, existing)?;
    let stats = Arc::new(Stats::default());
    let stats6 = Arc::new(xdpboot::dhcp6::stats::Stats::default());
    // Metrics and the node table, fed by every server below, shown on the admin listener.
    let observer = Observer::from_config(&config.admin);
    // What the servers report to: the observer, through the sink trait they know it by.
    let sink: Sink = observer.clone().map(|o| o as Arc<dyn EventSink>);
    // The policy and the boot API, and the boot content: what SIGHUP replaces.
    let decisions = Arc::new(Swap::new(
        Decisions::from_config(&config).context("the boot API")?,
    ));
    let boot = Arc::new(BootContent::new(config.clone(), decisions.clone())?);
    let mut tasks = tokio::task::JoinSet::new();
    // The stop signal for the servers whose work in flight is let finish (TFTP and HTTP), in
    // the manner of mini-redis's shutdown broadcast; each hands that work back through its
    // `handoff` once it has stopped taking new work.
    let (stop, stopping) = watch::channel(false);

    let xdp_names: Vec<String> = config
        .interfaces
        .iter()
        .filter(|n| !udp_names.contains(n))
        .cloned()
        .collect();
    if let Some(port_watcher) = port_watcher {
        tasks.spawn(async move {
            port_watcher.run().await;
            Ok(())
        });
    }
    if !xdp.is_empty() {
        let service = Arc::new(
            Service::new(
                decisions.clone(),
                interfaces.clone(),
                xdp_names,
                FsLoaders::new(&config.tftp.root, config.loaders.clone()),
                stats.clone(),
            )
            .with_observer(sink.clone())
            .with_ipv6(config.ipv6.clone(), stats6.clone()),
        );
        for iface in xdp {
            if let Some(observer) = &observer {
                observer.watch_xdp(&iface);
            }
            let (service, interfaces) = (service.clone(), interfaces.clone());
            let name = iface.name().to_owned();
            tasks.spawn(async move {
                iface
                    .serve(service, interfaces)
                    .await
                    .with_context(|| format!("XDP backend on {name}"))
            });
        }
    }
    if !udp_names.is_empty() {
        let service = Arc::new(
            Service::new(
                decisions.clone(),
                interfaces.clone(),
                udp_names.clone(),
                FsLoaders::new(&config.tftp.root, config.loaders.clone()),
                stats.clone(),
            )
            .with_observer(sink.clone())
            .with_ipv6(config.ipv6.clone(), stats6.clone()),
        );
        let dhcp = UdpSocket::bind(ServerPort::Dhcp)?;
        let pxe = UdpSocket::bind(ServerPort::Pxe)?;
        // DHCPv6: the group ff02::1:2 on each served interface, and [::]:4011.
        let mut v6 = Vec::new();
        if config.ipv6.enabled {
            for name in &udp_names {
                let Some(iface) = table.by_name(name) else {
                    continue;
                };
                v6.push((
                    format!("port 547 on {name}"),
                    Udp6Socket::bind_dhcp(iface.index, name)?,
                ));
            }
            v6.push(("port 4011 over IPv6".to_owned(), Udp6Socket::bind_pxe()?));
        }
        for name in &udp_names {
            tracing::info!(iface = %name, backend = "udp", ipv6 = config.ipv6.enabled, "serving");
        }
        let s = service.clone();
        tasks.spawn(async move { dhcp.serve(s).await.context("port 67") });
        for (what, socket) in v6 {
            let s = service.clone();
            tasks.spawn(async move { socket.serve(s).await.context(what) });
        }
        tasks.spawn(async move { pxe.serve(service).await.context("port 4011") });
    }
    // TFTP serves the first stage (loaders) on every served interface, whatever the backend.
    let tftp = TftpServer::bind(
        TftpConfig {
            loaders: config.loaders.clone(),
            ipv6: config.ipv6.enabled,
            ..TftpConfig::from(&config.tftp)
        },
        interfaces.clone(),
        config.interfaces.clone(),
    )?
    .with_observer(sink.clone())
    // Per-node GRUB and PXELINUX configs, and boot files for a GRUB that fetches over TFTP.
    .with_generator(boot.clone());
    let tftp_stats = tftp.stats();
    let (tftp_handoff, tftp_draining) = oneshot::channel();
    let tftp_stop = stopping.clone();
    tasks.spawn(async move {
        let draining = tftp.serve_until(tftp_stop).await.context("TFTP")?;
        let _ = tftp_handoff.send(draining);
        Ok(())
    });
    let http = Arc::new(config.clone());
    let http_observer = sink.clone();
    let http_boot = boot.clone();
    let (http_handoff, http_draining) = oneshot::channel();
    tasks.spawn(async move {
        let connections = xdpboot::http::serve_observed(http, http_boot, http_observer, stopping)
            .await
            .context("HTTP server")?;
        let _ = http_handoff.send(connections);
        Ok(())
    });
    if let Some(observer) = observer {
        observer.watch_dhcp(stats.clone());
        observer.watch_tftp(tftp_stats.clone());
        start_admin(&config, observer, &mut tasks).await;
    }
    tasks.spawn(async move { watcher.run().await.context("watching interface changes") });

    // The bound in force when the stop comes: a reload may change it.
    let drain_secs = Arc::new(AtomicU64::new(config.drain.as_secs()));
    let reloaded_drain = drain_secs.clone();
    tasks.spawn(async move {
        let mut running = config;
        while hangup.recv().await.is_some() {
            // A burst of signals is one reload.
            tokio::time::sleep(RELOAD_DEBOUNCE).await;
            running = reload(&source, running, &decisions, &boot);
            reloaded_drain.store(running.drain.as_secs(), Ordering::Relaxed);
        }
        Ok(())
    });
    let stopped_by = tokio::select! {
        _ = sigint.recv() => Ok("SIGINT"),
        _ = sigterm.recv() => Ok("SIGTERM"),
        Some(done) = tasks.join_next() => Err(match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
        }),
    };
    let result = match stopped_by {
        Ok(signal) => {
            // No new work from here: TFTP and HTTP stop taking it and hand back what runs.
            let _ = stop.send(true);
            let in_flight = InFlight {
                // A server that failed before the stop hands back nothing.
                tftp: tftp_draining.await.ok(),
                http: http_draining.await.ok(),
            };
            // DHCP stops answering at once: aborting the tasks drops the XDP attachments, so
            // the programs detach now and a restarted xdpboot can attach. The admin listener,
            // the interface watcher and SIGHUP stop with them.
            tasks.shutdown().await;
            let bound = Duration::from_secs(drain_secs.load(Ordering::Relaxed));
            in_flight
                .drain(signal, bound, async {
                    tokio::select! {
                        _ = sigint.recv() => "SIGINT",
                        _ = sigterm.recv() => "SIGTERM",
                    }
                })
                .await;
            Ok(())
        }
        Err(ended) => ended,
    };
    // After a failure, everything stops at once, as it always did.
    tasks.shutdown().await;
    let counts: Vec<String> = stats
        .snapshot()
        .into_iter()
        .chain(
            stats6
                .snapshot()
                .into_iter()
                .map(|(k, v)| (format!("dhcp6.{k}"), v)),
        )
        .chain(
            tftp_stats
                .snapshot()
                .into_iter()
                .map(|(k, v)| (format!("tftp.{k}"), v)),
        )
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!(counters = counts.join(" "), "stopped");
    result
}

/// The TFTP transfers and HTTP connections still running when the stop came.
struct InFlight {
    tftp: Option<Draining>,
    http: Option<JoinSet<()>>,
}

impl InFlight {
    /// Lets the work finish for up to `bound` (as nginx's graceful quit does), or until `again`,
    /// a second stop signal, then cuts what is left. One log line when it starts, one when it
    /// ends.
    async fn drain(
        mut self,
        signal: &str,
        bound: Duration,
        again: impl Future<Output = &'static str>,
    ) {
        let tftp_transfers = self.tftp.as_mut().map_or(0, |d| running(&mut d.transfers));
        let http_connections = self.http.as_mut().map_or(0, running);
        let in_flight = tftp_transfers + http_connections;
        tracing::info!(
            signal,
            tftp_transfers,
            http_connections,
            bound_secs = bound.as_secs(),
            "stopping: new work refused, draining the transfers in flight"
        );
        let all_done = async {
            for set in self.sets() {
                while set.join_next().await.is_some() {}
            }
        };
        let outcome = tokio::select! {
            () = all_done => "all finished",
            () = tokio::time::sleep(bound) => "bound reached",
            signal = again => signal,
        };
        let cut: usize = self.sets().into_iter().map(running).sum();
        tracing::info!(
            finished = in_flight.saturating_sub(cut),
            cut,
            outcome,
            "drained"
        );
        // Dropping `self` aborts what is left, and closes the TFTP port.
    }

    fn sets(&mut self) -> Vec<&mut JoinSet<()>> {
        let tftp = self.tftp.as_mut().map(|d| &mut d.transfers);
        tftp.into_iter().chain(self.http.as_mut()).collect()
    }
}

/// How many of `set`'s tasks are still running (the ended ones are reaped first).
fn running(set: &mut JoinSet<()>) -> usize {
    while set.try_join_next().is_some() {}
    set.len()
}

/// Starts the admin listener (`/metrics`, `/status`). Booting clients matters more than
/// watching them: when the address cannot be bound, this says so and the daemon goes on.
async fn start_admin(
    config: &Config,
    observer: Arc<Observer>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    let listen = config.admin.listen;
    match xdpboot::admin::AdminServer::bind(listen, observer).await {
        Ok(admin) => {
            tasks.spawn(async move {
                admin.serve().await;
                Ok(())
            });
        }
        Err(e) => tracing::error!(
            %listen,
            error = %e,
            "admin listener not started: no /metrics or /status (set [admin] listen, or enabled = false)"
        ),
    }
}

/// SIGHUP: reads the config again and swaps in the policy, the boot API and the boot content.
/// An invalid config is refused with its line and reason and the running one keeps serving.
/// Returns the config now in force.
fn reload(
    source: &Source,
    running: Config,
    decisions: &Swap<Decisions>,
    boot: &BootContent,
) -> Config {
    let new = match source.load() {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload refused: the config is invalid; still serving the previous one");
            return running;
        }
    };
    let new_decisions = match Decisions::from_config(&new) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; still serving the previous config");
            return running;
        }
    };
    for key in needs_restart(&running, &new) {
        tracing::warn!(key, "changed, but takes effect only after a restart");
    }
    decisions.store(new_decisions);
    boot.reload(new.clone());
    tracing::info!(
        rules = new.policy.rules.len(),
        nodes = new.nodes.len(),
        "config reloaded"
    );
    new
}

/// Sets up the XDP backend where the config asks for it (and, with `auto`, where it can
/// attach).
fn open_backends(
    config: &Config,
    table: &InterfaceTable,
    existing: ExistingProgram,
) -> anyhow::Result<XdpBackends> {
    if config.backend == Backend::Udp {
        return Ok(XdpBackends {
            xdp: Vec::new(),
            udp: config.interfaces.clone(),
            watcher: None,
        });
    }
    let steer = match config.xdp.steer {
        Steer::Tee => SteerMode::Tee,
        Steer::Redirect => SteerMode::Redirect,
        // Taking port-67 frames is only safe when nobody else on this host wants them: the
        // program asks the kernel per frame, and `watch_port_67` tees while anyone holds 67.
        Steer::Auto => SteerMode::Auto,
    };
    let settings = XdpSettings {
        steer,
        mode: match config.xdp.mode {
            XdpMode::Auto => AttachMode::Auto,
            XdpMode::Driver => AttachMode::Driver,
            XdpMode::Skb => AttachMode::Skb,
        },
        existing,
        shed_rate: config.xdp.shed_rate,
        shed_burst: config.xdp.shed_burst,
        never_shed: config.never_shed(),
        ipv6: config.ipv6.enabled,
    };
    // A VLAN sub-interface is served through the program on its parent device, which sees the
    // tagged frames first (and in driver mode, which VLAN devices do not have).
    let mut devices: Vec<(String, Vec<String>)> = Vec::new();
    for name in &config.interfaces {
        let device = table
            .by_name(name)
            .and_then(|i| i.vlan)
            .and_then(|v| table.get(v.parent))
            .map_or(name.clone(), |parent| parent.name.clone());
        match devices.iter_mut().find(|(d, _)| *d == device) {
            Some((_, names)) => names.push(name.clone()),
            None => devices.push((device, vec![name.clone()])),
        }
    }
    let mut xdp = Vec::new();
    let mut udp = Vec::new();
    for (device, names) in devices {
        match XdpInterface::open(&device, &settings) {
            Ok(iface) => xdp.push((iface, device, names)),
            Err(e) if config.backend == Backend::Auto => {
                tracing::warn!(iface = %device, error = %e, "XDP unavailable here: using the UDP backend");
                udp.extend(names);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("starting the XDP backend on {device}"));
            }
        }
    }
    // With `auto`, the first look at the host's port-67 sockets comes before any client is
    // served, so the start-up log says how each interface steers.
    let watcher = if config.xdp.steer == Steer::Auto && !xdp.is_empty() {
        let steered = xdp
            .iter()
            .map(|(iface, _, _)| iface.steered())
            .collect::<Result<Vec<_>, _>>()
            .context("the port-67 watcher")?;
        let mut watcher = PortWatcher::new(steered);
        watcher.poll();
        Some(watcher)
    } else {
        None
    };
    for (iface, device, names) in &xdp {
        for name in names {
            tracing::info!(
                iface = %name,
                device = %device,
                backend = "xdp",
                mode = %iface.mode(),
                steer = ?config.xdp.steer,
                ipv6 = config.ipv6.enabled,
                queues = iface.queue_count(),
                "serving"
            );
        }
    }
    let xdp = xdp.into_iter().map(|(iface, _, _)| iface).collect();
    Ok(XdpBackends { xdp, udp, watcher })
}

/// What [`open_backends`] set up.
struct XdpBackends {
    /// The interfaces the XDP backend serves, ready to serve.
    xdp: Vec<XdpInterface>,
    /// Interfaces left to the UDP backend.
    udp: Vec<String>,
    /// The port-67 watcher, with `--steer auto`.
    watcher: Option<PortWatcher>,
}
