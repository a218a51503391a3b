//! Serves a directory with xdpboot's HTTP(S) server alone, exactly as the daemon runs it
//! (`xdpboot::http::serve` with the embedded default's `[http]` limits): for `cargo xtask
//! bench-http` and for trying clients by hand.
//!
//! ```text
//! cargo run --release -p boot-user --example http_serve -- ROOT HTTP_PORT HTTPS_PORT TLS_DIR
//! ```
//! The TLS certificate is `TLS_DIR/server.pem` (generated with its CA on first start, for
//! "localhost" and the host's addresses). A port of 0 turns that listener off.

use std::path::PathBuf;

use anyhow::{Context, bail};
use xdpboot::config::Config;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, http_port, https_port, tls_dir] = &args[..] else {
        bail!("usage: http_serve ROOT HTTP_PORT HTTPS_PORT TLS_DIR");
    };
    let mut config = Config::embedded()?;
    // The URL secret lives beside the certificate, not under /var/lib.
    let tls_dir = std::path::absolute(PathBuf::from(tls_dir)).context("TLS_DIR")?;
    config.boot.secret_file = tls_dir.join("url-secret");
    let http = &mut config.http;
    http.root = std::path::absolute(root).context("ROOT")?;
    http.port = http_port.parse().context("HTTP_PORT")?;
    http.https_port = https_port.parse().context("HTTPS_PORT")?;
    http.tls_cert = tls_dir.join("server.pem");
    http.tls_key = tls_dir.join("server.key");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(xdpboot::http::serve(std::sync::Arc::new(config)))?;
    Ok(())
}
