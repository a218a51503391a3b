//! The `xdpboot` daemon and its command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use xdpboot::config::{Backend, Config};
use xdpboot::dhcp::{Responder, ServerPort};
use xdpboot::net::iface::Interfaces;
use xdpboot::net::udp::UdpSocket;
use xdpboot::service::{FsLoaders, Service};

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
        xdpboot check                                 validate and print the embedded default\n\n\
        Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=xdpboot=debug) for per-packet detail."
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
        .init();
    match Cli::parse().command {
        Command::Check { config } => check(config),
        Command::Run {
            interfaces,
            config,
            backend,
        } => {
            let mut config = load(config.as_deref())?;
            if !interfaces.is_empty() {
                config.interfaces = interfaces;
            }
            if let Some(backend) = backend {
                config.backend = backend;
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run(config))
        }
    }
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    // ConfigError's Display already names the file, line and key.
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    })
}

fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path.as_deref())?;
    let name = path.map_or("embedded default".to_owned(), |p| p.display().to_string());
    println!("{name}: ok");
    println!("backend: {}", config.backend);
    println!("interfaces: {}", config.interfaces.join(", "));
    println!(
        "tftp root: {} (port {})",
        config.tftp.root.display(),
        config.tftp.port
    );
    println!(
        "http root: {} (ports {} / {})",
        config.http.root.display(),
        config.http.port,
        config.http.https_port
    );
    println!("policy (first match wins):");
    for rule in &config.policy.rules {
        println!(
            "  {:<20} {:?} -> {:?}",
            rule.name, rule.matches, rule.action
        );
    }
    report_missing_loaders(&config);
    Ok(())
}

/// A loader named by the policy but missing from the TFTP root is reported at start (and
/// again per request, by the core): its clients will not be answered until it appears.
fn report_missing_loaders(config: &Config) {
    use xdpboot::dhcp::LoaderIndex;
    let loaders = FsLoaders::new(&config.tftp.root);
    for (rule, file) in config.tftp_loaders() {
        if !loaders.has_loader(file) {
            tracing::warn!(
                rule,
                file,
                root = %config.tftp.root.display(),
                "loader missing from the TFTP root: clients matching this rule will not be answered"
            );
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
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
        if iface.addrs.is_empty() {
            tracing::warn!(iface = %name, "interface has no IPv4 address yet: its clients are not answered until it gets one");
        }
    }
    report_missing_loaders(&config);

    let backend = match config.backend {
        Backend::Udp => Backend::Udp,
        // The XDP steering backend lands with the XDP issue; until then auto means UDP.
        Backend::Auto => Backend::Udp,
        Backend::Xdp => {
            bail!("the xdp backend is not available in this build yet; use --backend udp (or auto)")
        }
    };
    let service = Arc::new(Service::new(
        Responder::new(config.policy.clone(), config.url_ports()),
        interfaces,
        config.interfaces.clone(),
        &config.tftp.root,
    ));
    let dhcp = UdpSocket::bind(ServerPort::Dhcp)?;
    let pxe = UdpSocket::bind(ServerPort::Pxe)?;
    for name in &config.interfaces {
        tracing::info!(iface = %name, backend = %backend, "serving");
    }

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move { watcher.run().await.context("watching interface changes") });
    let s = service.clone();
    tasks.spawn(async move { dhcp.serve(s).await.context("port 67") });
    let s = service.clone();
    tasks.spawn(async move { pxe.serve(s).await.context("port 4011") });

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = sigterm.recv() => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
        },
    };
    tasks.abort_all();
    let counts: Vec<String> = service
        .stats
        .snapshot()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!(counters = counts.join(" "), "stopped");
    result
}
