//! `--prometheus`: a real Prometheus (Debian's `prometheus` package) scrapes every instance's
//! `/metrics` through the storm, with a config of the storm's own and its storage in the lab's
//! directory, listening on the loopback of the nodes' namespace. After the storm its HTTP API
//! (`/api/v1/query`) is asked for the counts summed over the instances, and each is compared
//! with what the load generator saw: what an operator's dashboard of several instances would
//! show against the truth.
//!
//! The counters also moved before the storm (the readiness probes' DISCOVERs), so the first
//! scrape of every instance is a baseline and the storm's share is the increase past it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use boot_tests::{ChildGuard, NetNs, TempDir};

use super::report::{RunReport, Stage};

/// How often every instance is scraped.
pub(super) const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Where Prometheus listens, in the nodes' namespace.
const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090);
/// How long Prometheus may take to be ready, and then to have scraped every instance.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest API answer read.
const MAX_RESPONSE: usize = 1 << 20;
/// Per request to the API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The scrape job's name.
const JOB: &str = "xdpboot";

/// Prometheus, running; stopped on drop.
pub(super) struct Prometheus {
    _child: ChildGuard,
    version: String,
    targets: Vec<SocketAddrV4>,
    /// Every query's value at the baseline scrape.
    baseline: BTreeMap<String, f64>,
}

/// One comparison: a sum over the instances in Prometheus against the storm's own count.
struct Row {
    what: &'static str,
    query: String,
    prometheus: f64,
    storm: u64,
}

/// What Prometheus counted, side by side with the storm.
pub(super) struct Comparison {
    version: String,
    targets: usize,
    rows: Vec<Row>,
    /// `sum by (stage)` of the boot-stage histogram's counts.
    stages: Vec<(String, f64)>,
}

/// What the storm knows to compare a sum with.
#[derive(Clone, Copy)]
enum Count {
    Offers,
    Acks,
    Done(Stage),
    Booted,
    BootedThrough(Ipv4Addr),
}

impl Count {
    fn of(self, report: &RunReport) -> u64 {
        let t = &report.tally;
        match self {
            Count::Offers => report.dhcp.offers(),
            Count::Acks => report.dhcp.acks(),
            Count::Done(stage) => t.done(stage),
            Count::Booted => t.booted(),
            Count::BootedThrough(ip) => t.booted_through().get(&ip).copied().unwrap_or(0),
        }
    }
}

/// The comparisons: label, PromQL summed over the instances, and the storm's count for it.
fn measures(instances: &[Ipv4Addr]) -> Vec<(&'static str, String, Count)> {
    let route = |route: &str| {
        format!(
            "sum(xdpboot_http_requests_total{{job=\"{JOB}\",route=\"{route}\",status=\"200\"}})"
        )
    };
    let mut rows = vec![
        (
            "proxy OFFERs (every instance answers each DISCOVER)",
            format!("sum(xdpboot_dhcp_replies_total{{job=\"{JOB}\",kind=\"proxy_offer\"}})"),
            Count::Offers,
        ),
        (
            "port-4011 ACKs",
            format!("sum(xdpboot_dhcp_replies_total{{job=\"{JOB}\",kind=\"proxy_ack\"}})"),
            Count::Acks,
        ),
        (
            "TFTP loader transfers completed",
            format!("sum(xdpboot_tftp_transfers_total{{job=\"{JOB}\",outcome=\"complete\"}})"),
            Count::Done(Stage::Tftp),
        ),
        ("HTTP scripts", route("script"), Count::Done(Stage::Script)),
        ("HTTP kernels", route("kernel"), Count::Done(Stage::Kernel)),
        (
            "HTTP shared initrds",
            route("initrd"),
            Count::Done(Stage::Initrd),
        ),
        (
            "HTTP overlays",
            route("overlay"),
            Count::Done(Stage::Overlay),
        ),
        (
            "boots reaching the script stage",
            format!("sum(xdpboot_boot_stage_seconds_count{{job=\"{JOB}\",stage=\"script\"}})"),
            Count::Done(Stage::Script),
        ),
        (
            "boots completed (overlay fetched)",
            format!("sum(xdpboot_boots_completed_total{{job=\"{JOB}\"}})"),
            Count::Booted,
        ),
    ];
    for ip in instances {
        rows.push((
            "… of them through this instance",
            format!(
                "sum(xdpboot_boots_completed_total{{job=\"{JOB}\",instance=\"{ip}:{}\"}})",
                super::lab::ADMIN_PORT
            ),
            Count::BootedThrough(*ip),
        ));
    }
    rows
}

impl Prometheus {
    /// Starts `binary` in `ns` scraping `targets` every [`SCRAPE_INTERVAL`], waits until it
    /// has scraped each, and takes the baseline.
    pub(super) fn start(
        ns: &NetNs,
        dir: &TempDir,
        binary: &Path,
        targets: &[SocketAddrV4],
    ) -> anyhow::Result<Prometheus> {
        let version = boot_tests::run_command(
            std::process::Command::new(binary).arg("--version"),
            READY_TIMEOUT,
        )
        .with_context(|| format!("running {} --version", binary.display()))?;
        let version = version.lines().next().unwrap_or("prometheus").to_owned();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text(targets))?;
        let storage = dir.join("prometheus-data");
        std::fs::create_dir_all(&storage)?;
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", storage.display()),
            format!("--web.listen-address={LISTEN}"),
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let mut child = ns.spawn("prometheus", binary, &args, &[], dir.join("prometheus.log"))?;
        child.wait_until("ready", READY_TIMEOUT, || {
            Ok(get(ns, "/-/ready").is_ok_and(|(status, _)| status == 200))
        })?;
        let mut prometheus = Prometheus {
            _child: child,
            version,
            targets: targets.to_vec(),
            baseline: BTreeMap::new(),
        };
        prometheus.wait_scraped(ns, unix_now())?;
        // The sums before any node booted.
        let instances: Vec<Ipv4Addr> = targets.iter().map(|t| *t.ip()).collect();
        for (_, query, _) in measures(&instances) {
            let value = sum(ns, &query)?;
            prometheus.baseline.insert(query, value);
        }
        Ok(prometheus)
    }

    pub(super) fn version(&self) -> &str {
        &self.version
    }

    /// Waits until every target was scraped, and was up, after `since` (Unix seconds).
    fn wait_scraped(&self, ns: &NetNs, since: f64) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let up = format!("count(up{{job=\"{JOB}\"}} == 1)");
        let oldest = format!("min(timestamp(up{{job=\"{JOB}\"}}))");
        loop {
            let all_up = sum(ns, &up)? as usize == self.targets.len();
            if all_up && sum(ns, &oldest)? > since {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus has not scraped all of {:?} (up) within {READY_TIMEOUT:?}",
                    self.targets
                );
            }
            std::thread::sleep(SCRAPE_INTERVAL / 4);
        }
    }

    /// After the storm: waits for a scrape of every instance, then queries each sum.
    pub(super) fn compare(&self, ns: &NetNs, report: &RunReport) -> anyhow::Result<Comparison> {
        self.wait_scraped(ns, unix_now())?;
        let mut rows = Vec::new();
        for (what, query, count) in measures(&report.instances) {
            let before = self.baseline.get(&query).copied().unwrap_or(0.0);
            rows.push(Row {
                what,
                prometheus: sum(ns, &query)? - before,
                query,
                storm: count.of(report),
            });
        }
        let stages = query(
            ns,
            &format!("sum by (stage) (xdpboot_boot_stage_seconds_count{{job=\"{JOB}\"}})"),
        )?
        .into_iter()
        .map(|(labels, value)| (labels.get("stage").cloned().unwrap_or_default(), value))
        .collect();
        Ok(Comparison {
            version: self.version.clone(),
            targets: self.targets.len(),
            rows,
            stages,
        })
    }
}

impl Comparison {
    /// Whether every sum matched the storm's count exactly.
    pub(super) fn agrees(&self) -> bool {
        self.rows.iter().all(|r| r.prometheus == r.storm as f64)
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### Prometheus: the instances summed\n\n{}, scraping {} instance(s) every {:?}; \
             queried through /api/v1/query after a scrape that followed the storm, less the \
             baseline scrape before it.\n\n| what | PromQL | Prometheus | the storm | |\n\
             |---|---|---:|---:|---|",
            self.version, self.targets, SCRAPE_INTERVAL
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} |",
                row.what,
                row.query,
                row.prometheus,
                row.storm,
                if row.prometheus == row.storm as f64 {
                    "="
                } else {
                    "**differs**"
                }
            );
        }
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|(stage, n)| format!("{stage} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\nBoots per stage, `sum by (stage) (xdpboot_boot_stage_seconds_count)` (baseline \
             included): {}. The script and overlay stages are exact (the MAC is in the URL); \
             the loader, kernel and initrd stages are put down to a node by its address, which \
             all simulated nodes share, so they count fewer than the transfers above.\n",
            stages.join(", ")
        );
        f.write_str(&out)
    }
}

/// The scrape config: one job, every instance's admin listener.
fn config_text(targets: &[SocketAddrV4]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "# cargo xtask loadtest --prometheus: every xdpboot instance of the storm.\n\
         global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", "),
        interval = SCRAPE_INTERVAL.as_secs()
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The single value of an aggregating query (0 when it has no series: nothing counted yet).
fn sum(ns: &NetNs, promql: &str) -> anyhow::Result<f64> {
    let result = query(ns, promql)?;
    ensure!(
        result.len() <= 1,
        "`{promql}` gave {} series, not one",
        result.len()
    );
    Ok(result.first().map_or(0.0, |(_, v)| *v))
}

/// An instant query: each series' labels and value.
fn query(ns: &NetNs, promql: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
    let (status, body) = get(ns, &format!("/api/v1/query?query={}", url_encode(promql)))?;
    let answer: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("Prometheus answered `{promql}` with HTTP {status}: {body}"))?;
    ensure!(
        status == 200 && answer["status"] == "success",
        "Prometheus refused `{promql}` (HTTP {status}): {body}"
    );
    let series = answer["data"]["result"]
        .as_array()
        .with_context(|| format!("`{promql}`: no result vector in {body}"))?;
    series
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            // [time, "value"]: the value is a string (Prometheus's HTTP API docs).
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("`{promql}`: no value in {s}"))?;
            Ok((labels, value))
        })
        .collect()
}

/// `GET path` from Prometheus, in `ns`: status and body.
fn get(ns: &NetNs, path: &str) -> anyhow::Result<(u16, String)> {
    ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&LISTEN.into(), REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        // HTTP/1.0: the answer ends when the connection does.
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {LISTEN}\r\n\r\n")?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut response)?;
        ensure!(
            response.len() <= MAX_RESPONSE,
            "Prometheus's answer to {path} is over {MAX_RESPONSE} bytes"
        );
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("an HTTP answer without a head")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("an HTTP answer without a status")?;
        Ok((status, body.to_owned()))
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_percent_encoded_whole() {
        assert_eq!(
            url_encode("sum(up{job=\"x\"}) == 1"),
            "sum%28up%7Bjob%3D%22x%22%7D%29%20%3D%3D%201"
        );
    }

    #[test]
    fn the_scrape_config_names_every_instance() {
        let text = config_text(&[
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 1), 9180),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 2), 9180),
        ]);
        assert!(text.contains("targets: ['198.18.100.1:9180', '198.18.100.2:9180']"));
        assert!(text.contains("scrape_interval: 1s"));
    }
}
