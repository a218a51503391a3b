//! The Debian package (GitHub issue 7): building it with cargo-deb, unpacking it, reading its
//! systemd unit, and what `systemd-analyze` says about that unit. `tests/package.rs` and
//! `cargo xtask package` share these.
//!
//! Nothing here installs anything: the package is unpacked into temporary directories, and
//! `systemd-analyze` reads the unit from a copy (it works offline, without systemd running).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{COMMAND_TIMEOUT, TempDir, command_output, run_command};

/// The Debian package's name (`[package.metadata.deb] name` in boot-user/Cargo.toml).
pub const PACKAGE: &str = "xdpboot";
/// The systemd unit, and where the package puts it.
pub const UNIT_NAME: &str = "xdpboot.service";
pub const UNIT_PATH: &str = "usr/lib/systemd/system/xdpboot.service";
/// The host's unit directory, which `systemd-analyze verify` needs beside ours (the targets
/// every service depends on).
const HOST_UNITS: &str = "/usr/lib/systemd/system";
/// How long `cargo deb` may take: a cold release build of the workspace is about 2 minutes on
/// two cores, and the XDP program is built inside it.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// `cargo deb -p boot-user --output DIR` (a release build; `fast`: quicker, larger
/// compression), to run from the workspace root.
pub fn build_command(output: &Path, fast: bool) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["deb", "--package", "boot-user", "--output"])
        .arg(output)
        .current_dir(workspace_root());
    if fast {
        command.arg("--fast");
    }
    command
}

/// The one `xdpboot_*.deb` in `dir`.
pub fn find_deb(dir: &Path) -> Result<PathBuf> {
    let prefix = format!("{PACKAGE}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    ensure!(
        debs.len() == 1,
        "expected one {prefix}*.deb in {}, found {debs:?}",
        dir.display()
    );
    Ok(debs.remove(0))
}

/// A .deb unpacked into a temporary directory: its files under [`Unpacked::root`] (`dpkg-deb
/// -x`), its control files under `DEBIAN/` (`dpkg-deb -e`). Removed on drop.
#[derive(Debug)]
pub struct Unpacked {
    dir: TempDir,
}

impl Unpacked {
    pub fn new(deb: &Path) -> Result<Unpacked> {
        let dir = TempDir::new("deb")?;
        let root = dir.join("root");
        for (flag, into) in [("-x", root.clone()), ("-e", root.join("DEBIAN"))] {
            run_command(
                Command::new("dpkg-deb").arg(flag).arg(deb).arg(&into),
                COMMAND_TIMEOUT,
            )?;
        }
        Ok(Unpacked { dir })
    }

    /// The package's file tree, as it would be installed under `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The temporary directory the package is unpacked in (beside `root`), for the caller's
    /// own files.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// A control file: `control`, `conffiles`, `postinst`, ….
    pub fn control_file(&self, name: &str) -> Result<String> {
        let path = self.root().join("DEBIAN").join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// The systemd unit the package installs.
    pub fn unit(&self) -> Result<Unit> {
        let path = self.root().join(UNIT_PATH);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Unit::parse(&text)
    }
}

/// A systemd unit file: `Key=Value` settings by section, in file order.
#[derive(Debug, Clone)]
pub struct Unit {
    settings: Vec<(String, String, String)>,
}

impl Unit {
    /// Parses the unit syntax this package uses: `[Section]` lines, `Key=Value` lines, `#` and
    /// `;` comments. Line continuations are refused rather than misread.
    pub fn parse(text: &str) -> Result<Unit> {
        let mut section = String::new();
        let mut settings = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            ensure!(
                !line.ends_with('\\'),
                "line {}: continuation lines are not supported here",
                n + 1
            );
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: neither a section nor Key=Value: {line:?}", n + 1);
            };
            settings.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Ok(Unit { settings })
    }

    /// Every value of `key` in `section`, in order.
    pub fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value of a `[Service]` setting that is given once.
    pub fn service(&self, key: &str) -> Result<&str> {
        match self.values("Service", key).as_slice() {
            [value] => Ok(value),
            [] => bail!("the unit has no {key}="),
            more => bail!("the unit sets {key}= {} times", more.len()),
        }
    }

    /// A `[Service]` capability list (`AmbientCapabilities=`, `CapabilityBoundingSet=`) as
    /// setpriv names them: `CAP_NET_RAW` → `net_raw`.
    pub fn capabilities(&self, key: &str) -> Result<Vec<String>> {
        let mut caps = Vec::new();
        for value in self.values("Service", key) {
            for cap in value.split_whitespace() {
                let Some(name) = cap.strip_prefix("CAP_") else {
                    bail!("{key}={value}: {cap:?} is not a capability name");
                };
                caps.push(name.to_ascii_lowercase());
            }
        }
        Ok(caps)
    }

    /// A `[Service]` resource limit (`LimitMEMLOCK=64M`, `LimitNOFILE=65536`) in its unit
    /// (bytes for sizes, with systemd's base-1024 K, M and G). One value for soft and hard.
    pub fn limit(&self, key: &str) -> Result<u64> {
        let value = self.service(key)?;
        let (digits, factor) = match value.chars().last() {
            Some('K') => (&value[..value.len() - 1], 1u64 << 10),
            Some('M') => (&value[..value.len() - 1], 1 << 20),
            Some('G') => (&value[..value.len() - 1], 1 << 30),
            _ => (value, 1),
        };
        let n: u64 = digits
            .parse()
            .with_context(|| format!("{key}={value} is not a number (soft:hard pairs and infinity are not supported here)"))?;
        Ok(n * factor)
    }

    /// `ExecStart=` as an argument vector. Quoting, specifiers (`%`) and prefixes (`-`, `@`, …)
    /// are refused: the unit keeps its command plain.
    pub fn exec_start(&self) -> Result<Vec<String>> {
        let value = self.service("ExecStart")?;
        ensure!(
            !value.contains(['"', '\'', '%', '$', '\\']) && value.starts_with('/'),
            "ExecStart={value}: only a plain absolute command line is supported here"
        );
        Ok(value.split_whitespace().map(str::to_owned).collect())
    }
}

/// What `systemd-analyze` says about the package's unit.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// `systemd-analyze verify`'s output: empty when the unit is clean.
    pub verify: String,
    /// `systemd-analyze security --offline=true`'s table.
    pub security: String,
    /// Its overall exposure score, 0.0 (locked down) to 10.0 (unprotected).
    pub exposure: f64,
    /// Its verdict on that score: `OK`, `MEDIUM`, `EXPOSED`, ….
    pub verdict: String,
}

/// Runs `systemd-analyze verify` and `security --offline=true` on the package's unit, in a
/// copy of the host's unit directory with the package's unit and commands added (`verify`
/// checks that ExecStart's program exists, and that the targets the service is ordered
/// against do).
pub fn analyze(unpacked: &Unpacked) -> Result<Analysis> {
    let scratch = TempDir::new("analyze")?;
    let root = scratch.path();
    let units = root.join(HOST_UNITS.trim_start_matches('/'));
    std::fs::create_dir_all(&units)?;
    run_command(
        Command::new("cp")
            .args(["-a", "--no-target-directory"])
            .arg(HOST_UNITS)
            .arg(&units),
        COMMAND_TIMEOUT,
    )
    .context("copying the host's systemd units (is the systemd package installed?)")?;
    std::fs::copy(unpacked.root().join(UNIT_PATH), units.join(UNIT_NAME))?;
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin)?;
    for entry in std::fs::read_dir(unpacked.root().join("usr/bin"))? {
        let entry = entry?;
        let into = bin.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &into).is_err() {
            std::fs::copy(entry.path(), &into)?;
        }
    }

    let root_arg = format!("--root={}", root.display());
    let (status, verify) =
        output_of(Command::new("systemd-analyze").args(["verify", &root_arg, UNIT_NAME]))?;
    ensure!(
        status.success(),
        "systemd-analyze verify failed ({status}):\n{verify}"
    );
    let (status, security) = output_of(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        &root_arg,
        UNIT_NAME,
    ]))?;
    ensure!(
        status.success(),
        "systemd-analyze security failed ({status}):\n{security}"
    );
    // "→ Overall exposure level for xdpboot.service: 2.0 OK 🙂"
    let marker = format!("Overall exposure level for {UNIT_NAME}:");
    let (exposure, verdict) = security
        .lines()
        .find_map(|line| {
            let mut words = line.split_once(&marker)?.1.split_whitespace();
            Some((words.next()?.parse().ok()?, words.next()?.to_owned()))
        })
        .with_context(|| format!("no exposure score in:\n{security}"))?;
    Ok(Analysis {
        verify: verify.trim().to_owned(),
        security,
        exposure,
        verdict,
    })
}

/// Runs `command` to completion within [`COMMAND_TIMEOUT`]; returns its status and its stdout
/// followed by its stderr.
fn output_of(command: &mut Command) -> Result<(ExitStatus, String)> {
    let output = command_output(command, COMMAND_TIMEOUT)?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "[Unit]\nDescription=x\n\n[Service]\n# a comment\n\
        ExecStart=/usr/bin/xdpboot run --config /etc/xdpboot/xdpboot.toml\n\
        AmbientCapabilities=CAP_BPF CAP_NET_RAW\nAmbientCapabilities=CAP_PERFMON\n\
        LimitMEMLOCK=64M\nLimitNOFILE=65536\n";

    #[test]
    fn unit_settings_are_read_by_section_and_key() {
        let unit = Unit::parse(SAMPLE).unwrap();
        assert_eq!(
            unit.exec_start().unwrap(),
            [
                "/usr/bin/xdpboot",
                "run",
                "--config",
                "/etc/xdpboot/xdpboot.toml"
            ]
        );
        assert_eq!(
            unit.capabilities("AmbientCapabilities").unwrap(),
            ["bpf", "net_raw", "perfmon"]
        );
        assert_eq!(unit.limit("LimitMEMLOCK").unwrap(), 64 << 20);
        assert_eq!(unit.limit("LimitNOFILE").unwrap(), 65536);
        assert!(
            unit.service("Description").is_err(),
            "Description is in [Unit]"
        );
    }

    #[test]
    fn unit_commands_with_quoting_or_specifiers_are_refused() {
        let unit = Unit::parse("[Service]\nExecStart=-/usr/bin/x \"a b\"\n").unwrap();
        assert!(unit.exec_start().is_err());
        assert!(Unit::parse("[Service]\nExecStart=/bin/x \\\n  y\n").is_err());
    }
}
