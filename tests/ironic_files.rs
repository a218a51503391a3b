//! OpenStack Ironic's own boot files, for the tests that boot through xdpboot as an Ironic
//! deployment's front end (tests/ironic.rs).
//!
//! Ironic's `ipxe` boot interface writes into its HTTP root (`[deploy] http_root`, served at
//! `[deploy] http_url`) a master `boot.ipxe` that chains `pxelinux.cfg/${mac:hexhyp}`, a
//! `<node-uuid>/config` per node rendered from `ipxe_config.template`, relative symlinks
//! `pxelinux.cfg/<mac-lower-hyphens>` → `../<uuid>/config`, and the images `<uuid>/deploy_kernel`
//! and `<uuid>/deploy_ramdisk` (DESIGN.md, "Ironic's layout"). Its `pxe` interface writes GRUB
//! configs instead (`grub/grub.cfg`, `<uuid>/config`, `grub.cfg-01-<mac>` and `<mac>.conf`).
//!
//! Nothing here imitates that: the `ironic` wheel from PyPI ([`IRONIC_VERSION`]) is installed
//! with Jinja2 into a virtualenv of its own ([`venv_dir`]; `cargo xtask setup` makes it, or the
//! first test that needs it), and `tests/data/ironic/render.py` runs the wheel's own functions
//! (`render_template` with its sandboxed Jinja2 environment, `create_ipxe_boot_script`,
//! `create_pxe_config`, `switch_pxe_config`, …) against small stand-ins for Ironic's config and
//! database objects. [`Ironic::check_renderings`] first compares its renderings with the
//! expected files that ship in the wheel's unit tests.
//!
//! The ramdisks are the lab's: [`ramdisk`] builds a busybox initrd whose /init prints a marker
//! and its /proc/cmdline, so a test sees which image booted with which of Ironic's parameters.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::MacAddr;
use nix::fcntl::{Flock, FlockArg};

use crate::run_command;

/// The Ironic release whose files the tests use (PyPI `ironic`, 2025.2 "Flamingo" series).
pub const IRONIC_VERSION: &str = "39.0.0";
/// Jinja2 as Ironic 39.0.0 requires it (`Jinja2>=3.1.6`), and its one dependency.
pub const JINJA2_VERSION: &str = "3.1.6";
pub const MARKUPSAFE_VERSION: &str = "3.0.2";
/// Debian's Python (package `python3-venv` for its `venv` module).
const PYTHON: &str = "/usr/bin/python3";
/// How long creating the virtualenv and installing three wheels may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one run of the renderer may take.
const RENDER_TIMEOUT: Duration = Duration::from_secs(60);
/// The renderer: Ironic's functions from the installed wheel (see its docstring).
const RENDER_PY: &str = include_str!("data/ironic/render.py");

/// What the deploy ramdisk's /init prints, followed by its /proc/cmdline.
pub const DEPLOY_MARKER: &str = "IRONIC-DEPLOY-RAMDISK";
/// What the instance ramdisk's /init prints (after `goto boot_ramdisk`), and its cmdline.
pub const INSTANCE_MARKER: &str = "IRONIC-INSTANCE-RAMDISK";

/// The virtualenv: `$XDPBOOT_IRONIC_VENV`, or `target/ironic-<version>/` in the workspace
/// (throwaway: `cargo clean` removes it, and setup or the next test makes it again).
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDPBOOT_IRONIC_VENV") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .join(format!("target/ironic-{IRONIC_VERSION}"))
}

/// What the stamp file holds once the virtualenv is complete.
fn stamp() -> String {
    format!("ironic=={IRONIC_VERSION} Jinja2=={JINJA2_VERSION} MarkupSafe=={MARKUPSAFE_VERSION}\n")
}

/// The virtualenv with Ironic's wheel.
#[derive(Debug, Clone)]
pub struct Ironic {
    python: PathBuf,
}

impl Ironic {
    /// Whether the virtualenv is there and complete.
    pub fn is_prepared() -> bool {
        fs::read_to_string(venv_dir().join("xdpboot-stamp")).ok() == Some(stamp())
    }

    /// Makes the virtualenv if it is not complete: `python3 -m venv`, then pip installs the
    /// pinned wheels without dependencies (Ironic's own, oslo and the rest, are never
    /// imported). Serialised on an flock beside it; built under a temporary name and renamed.
    pub fn prepare(progress: &mut dyn FnMut(&str)) -> Result<Ironic> {
        let dir = venv_dir();
        let parent = dir.parent().context("the virtualenv has a parent")?;
        fs::create_dir_all(parent)?;
        // Beside it, by full name (its own name has dots: `with_extension` would cut it).
        let sibling = |suffix: &str| {
            let mut name = dir.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let lock_file = fs::File::create(sibling(".lock"))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking the Ironic virtualenv")?;
        let ironic = Ironic {
            python: dir.join("bin/python"),
        };
        if Ironic::is_prepared() {
            progress(&format!(
                "ironic {IRONIC_VERSION}: {} (already there)",
                dir.display()
            ));
            return Ok(ironic);
        }
        progress(&format!(
            "ironic {IRONIC_VERSION}: a virtualenv in {} with the wheel and Jinja2 {JINJA2_VERSION} from PyPI",
            dir.display()
        ));
        let tmp = sibling(".new");
        let _ = fs::remove_dir_all(&tmp);
        run_command(
            Command::new(PYTHON).args(["-m", "venv"]).arg(&tmp),
            INSTALL_TIMEOUT,
        )
        .context("creating a virtualenv (install python3-venv: cargo xtask setup)")?;
        run_command(
            Command::new(tmp.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--only-binary=:all:",
                ])
                .arg(format!("ironic=={IRONIC_VERSION}"))
                .arg(format!("Jinja2=={JINJA2_VERSION}"))
                .arg(format!("MarkupSafe=={MARKUPSAFE_VERSION}")),
            INSTALL_TIMEOUT,
        )
        .context("installing Ironic's wheel from PyPI")?;
        fs::write(tmp.join("xdpboot-stamp"), stamp())?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir)?;
        Ok(ironic)
    }

    /// [`Ironic::prepare`] once per process, quietly (tests).
    pub fn get() -> Result<&'static Ironic> {
        static IRONIC: OnceLock<Result<Ironic, String>> = OnceLock::new();
        IRONIC
            .get_or_init(|| {
                Ironic::prepare(&mut |line| eprintln!("[ironic] {line}"))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("preparing Ironic's virtualenv: {e}"))
    }

    /// Runs the renderer on `request` (JSON); its answer (JSON).
    fn run(&self, request: &str) -> Result<serde_json::Value> {
        let dir = crate::TempDir::new("ironic-render")?;
        let (script, request_file) = (dir.join("render.py"), dir.join("request.json"));
        fs::write(&script, RENDER_PY)?;
        fs::write(&request_file, request)?;
        let out = run_command(
            Command::new(&self.python).arg(&script).arg(&request_file),
            RENDER_TIMEOUT,
        )?;
        let answer: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("the renderer's answer is not JSON: {out}"))?;
        ensure!(
            answer["ironic"] == IRONIC_VERSION,
            "the virtualenv has ironic {}, not {IRONIC_VERSION}",
            answer["ironic"]
        );
        Ok(answer)
    }

    /// Renders what `ironic/tests/unit/common/test_pxe_utils.py` renders and compares it with
    /// the expected files in `ironic/tests/unit/drivers/`; the names of those checked.
    pub fn check_renderings(&self) -> Result<Vec<String>> {
        let answer = self.run(r#"{"op": "check"}"#)?;
        Ok(answer["checked"]
            .as_array()
            .context("a list of checked files")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// Writes `layout` as Ironic does before it powers the nodes on; the paths of the images.
    pub fn lay_out(&self, layout: &Layout) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(&layout.http_root)?;
        fs::create_dir_all(&layout.tftp_root)?;
        let answer = self.run(&layout.to_json())?;
        Ok(answer["written"]
            .as_array()
            .context("a list of written files")?
            .iter()
            .filter_map(|v| v.as_str().map(PathBuf::from))
            .collect())
    }

    /// What Ironic does to a node's config once a deploy is done: `switch_pxe_config`, which
    /// rewrites every `goto …` line of an iPXE config (`default=…` of a GRUB one) to the
    /// instance's label.
    pub fn switch_config(&self, config: &Path, to: Switch, interface: Interface) -> Result<()> {
        let mut request = String::from("{\"op\": \"switch\", ");
        let _ = write!(
            request,
            "\"path\": {}, \"mode\": {}, \"ipxe_enabled\": {}, \"boot_mode\": {}}}",
            json_string(&config.display().to_string()),
            json_string(match to {
                Switch::Ramdisk => "ramdisk",
                Switch::WholeDisk => "whole_disk",
            }),
            interface == Interface::Ipxe,
            json_string(match interface {
                Interface::Ipxe => "bios",
                Interface::Pxe => "uefi",
            }),
        );
        self.run(&request).map(drop)
    }
}

/// Which of Ironic's boot interfaces writes the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// `ipxe` (and `http-ipxe`): iPXE scripts in the HTTP root.
    Ipxe,
    /// `pxe` (and `http`) in UEFI mode: GRUB configs in the TFTP root.
    Pxe,
}

/// What a deployed node boots next ([`Ironic::switch_config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// A ramdisk deploy: the instance's kernel and ramdisk over the network (`boot_ramdisk`).
    Ramdisk,
    /// A whole-disk image: the local disk (`boot_whole_disk`).
    WholeDisk,
}

/// A node as Ironic knows it: its ports' MACs and its `driver_info` images.
#[derive(Debug, Clone)]
pub struct IronicNode {
    pub uuid: String,
    pub macs: Vec<MacAddr>,
    pub deploy_kernel: PathBuf,
    pub deploy_ramdisk: PathBuf,
    /// The instance's kernel and ramdisk (a ramdisk deploy boots them from the network).
    pub kernel: PathBuf,
    pub ramdisk: PathBuf,
    /// `[pxe] kernel_append_params`.
    pub kernel_append_params: String,
    /// What `deploy_utils.build_agent_options` adds: the Ironic API the agent calls.
    pub ipa_api_url: String,
}

/// Where Ironic writes, and its `[deploy] http_url`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub interface: Interface,
    /// `[deploy] http_root`.
    pub http_root: PathBuf,
    /// `[pxe] tftp_root`.
    pub tftp_root: PathBuf,
    /// `[deploy] http_url`.
    pub http_url: String,
    /// `[pxe] ipxe_fallback_script`.
    pub fallback_script: Option<String>,
    /// `[pxe] tftp_server` (the GRUB config's `boot_server=`).
    pub tftp_server: Option<String>,
    pub nodes: Vec<IronicNode>,
}

impl Layout {
    /// `<http_root>/<uuid>/config` (the TFTP root's for the GRUB-based interface).
    pub fn config_of(&self, node: &IronicNode) -> PathBuf {
        let root = match self.interface {
            Interface::Ipxe => &self.http_root,
            Interface::Pxe => &self.tftp_root,
        };
        root.join(&node.uuid).join("config")
    }

    fn to_json(&self) -> String {
        let path = |p: &Path| json_string(&p.display().to_string());
        let opt = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), json_string);
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let macs: Vec<String> = n.macs.iter().map(|m| json_string(&m.to_string())).collect();
                format!(
                    "{{\"uuid\": {}, \"macs\": [{}], \"deploy_kernel\": {}, \"deploy_ramdisk\": {}, \
                     \"kernel\": {}, \"ramdisk\": {}, \"kernel_append_params\": {}, \"ipa_api_url\": {}}}",
                    json_string(&n.uuid),
                    macs.join(", "),
                    path(&n.deploy_kernel),
                    path(&n.deploy_ramdisk),
                    path(&n.kernel),
                    path(&n.ramdisk),
                    json_string(&n.kernel_append_params),
                    json_string(&n.ipa_api_url),
                )
            })
            .collect();
        format!(
            "{{\"op\": \"layout\", \"interface\": {}, \"http_root\": {}, \"tftp_root\": {}, \
             \"http_url\": {}, \"fallback_script\": {}, \"tftp_server\": {}, \"nodes\": [{}]}}",
            json_string(match self.interface {
                Interface::Ipxe => "ipxe",
                Interface::Pxe => "pxe",
            }),
            path(&self.http_root),
            path(&self.tftp_root),
            json_string(&self.http_url),
            opt(&self.fallback_script),
            opt(&self.tftp_server),
            nodes.join(", "),
        )
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A ramdisk whose /init prints `marker` and its /proc/cmdline on one line, then powers off
/// (QEMU exits): `<marker> cmdline: <the kernel's command line>`.
pub fn ramdisk(dir: &Path, marker: &str) -> Result<PathBuf> {
    if marker.contains(['"', '$', '`', '\\']) {
        bail!("{marker:?} would not print as written");
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mkdir -p /proc\n\
         mount -t proc proc /proc\n\
         echo \"{marker} cmdline: $(cat /proc/cmdline)\"\n\
         poweroff -f\n"
    );
    let out = dir.join(format!("{}.img", marker.to_lowercase()));
    crate::assets::build_initrd_with(
        &dir.join(format!("{}-root", marker.to_lowercase())),
        &out,
        Path::new(crate::assets::BUSYBOX),
        &init,
    )?;
    let _ = fs::remove_dir_all(dir.join(format!("{}-root", marker.to_lowercase())));
    Ok(out)
}

/// The kernel command line a ramdisk printed after `marker`, from a console line.
pub fn printed_cmdline<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.strip_prefix(" cmdline: ")
}
