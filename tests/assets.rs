//! What the firmware tests and `cargo xtask run` boot, cached under the workspace's `.cache/`:
//! Debian 13's iPXE loaders and OVMF (DESIGN.md, "Firmware and TLS facts": Debian 12's iPXE
//! has no HTTPS), a Debian kernel (signed by Debian, so the Secure Boot chain boots it too),
//! Debian's signed shim and GRUB and Debian 12's PXELINUX, and a small busybox initrd built
//! here. Nothing is installed: the packages are fetched with `apt-get download` through a
//! private apt configuration per suite (its own sources list, lists and cache under
//! `.cache/apt/`, the system's apt untouched) and unpacked with `dpkg-deb`.
//!
//! Layout (all of it reproducible from a clean checkout; `rm -rf .cache` starts over):
//! ```text
//! .cache/apt/                  sources.list (Debian 13 "trixie"), lists/, archives
//! .cache/debs/                 the downloaded .deb files
//! .cache/debian13/ipxe/        ipxe_<version>.deb unpacked (usr/lib/ipxe/ipxe-amd64.efi, …)
//! .cache/debian13/ovmf/        ovmf_<version>.deb unpacked
//! .cache/debian13/<package>/   shim-signed, grub-efi-amd64-signed (GRUB 2.12: the http module)
//! .cache/apt-bookworm/         the same as apt/ for Debian 12 "bookworm"
//! .cache/debs-bookworm/        Debian 12's .deb files
//! .cache/debian12/<package>/   shim-signed, grub-efi-amd64-signed (GRUB 2.06: tftp only),
//!                              pxelinux, syslinux-common
//! .cache/kernel/vmlinuz        the kernel of linux-image-cloud-amd64 (virtio, EFI stub, 8250)
//! .cache/lab/tftp/             the lab's TFTP root: undionly.kpxe, ipxe-amd64.efi, snponly.efi,
//!                              ipxe-arm64.efi
//! .cache/lab/http/             the lab's HTTP root: the loaders again, vmlinuz, shared-initrd.img
//! .cache/arm64/                only once an arm64 node boots ([`Arm64Assets`]):
//!   apt/, debs/                a second private apt configuration, for Debian 13's arm64 packages
//!   busybox/, kernel/          busybox-static:arm64 and linux-image-cloud-arm64 unpacked
//!   shim/, grub/               shim-signed:arm64 and grub-efi-arm64-signed unpacked (Secure Boot)
//!   http/                      vmlinuz and shared-initrd.img for arm64 (the same /init), which the
//!                              lab serves through `[boot.arch.uefi-arm64]`
//! ```
//! The arm64 firmware (AAVMF) is Debian 12's `qemu-efi-aarch64`, installed by `cargo xtask
//! setup` like OVMF (see [`crate::vm`]).
//! The lab runs xdpboot with the embedded default plus a config that points `[tftp] root` and
//! `[http] root` at `.cache/lab/` (never `/var/lib/xdpboot` on the host).
//!
//! Concurrent users (test binaries, `cargo xtask run`) serialise on an flock of
//! `.cache/.lock`; each piece is built into a temporary name and renamed into place, so a
//! reader never sees half of it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::fcntl::{Flock, FlockArg};

use crate::run_command;

/// The suite the firmware packages come from (DESIGN.md: 1.21.1+git20250501 iPXE with TLS).
/// The keyring of Debian 12's `debian-archive-keyring` holds the trixie keys.
const TRIXIE: Suite = Suite {
    name: "trixie",
    release: "Debian 13",
};
/// The suite of Debian 12's GRUB (2.06, without the `http` module: the TFTP way of feeding
/// GRUB) and of the syslinux the BIOS chain test uses.
const BOOKWORM: Suite = Suite {
    name: "bookworm",
    release: "Debian 12",
};
/// The signed boot chain, unpacked under `.cache/debian<N>/` with the directory the lab's
/// `[loaders] search` points at: the MS-signed shim and the Debian-signed network GRUB (prefix
/// `/grub`). Debian 13's GRUB (2.12) has the `http` module, Debian 12's (2.06) only `tftp`, so
/// each suite proves one of xdpboot's two ways to feed GRUB.
pub const SIGNED_CHAIN_PACKAGES: &[(&str, &str)] = &[
    ("shim-signed", "usr/lib/shim"),
    ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed"),
];
/// Debian 12's PXELINUX and its BIOS modules (`ldlinux.c32`, which lpxelinux loads first).
pub const PXELINUX_PACKAGES: &[(&str, &str)] = &[
    ("pxelinux", "usr/lib/PXELINUX"),
    ("syslinux-common", "usr/lib/syslinux/modules/bios"),
];
/// The kernel metapackage; it depends on the versioned image package we download. The cloud
/// flavour is a third the size of the generic one and has everything a QEMU guest needs.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// The same for arm64: virtio, PL011 (ttyAMA0) and the EFI stub, all built in.
const ARM64_KERNEL_METAPACKAGE: &str = "linux-image-cloud-arm64";
/// The arm64 busybox, the one program of the arm64 initrd (the host's is x86-64).
const ARM64_BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Secure Boot chain for arm64: Debian's shim signed by Microsoft, and GRUB signed by
/// Debian (the kernel of [`ARM64_KERNEL_METAPACKAGE`] is signed by Debian too).
const ARM64_SHIM_PACKAGE: &str = "shim-signed";
const ARM64_GRUB_PACKAGE: &str = "grub-efi-arm64-signed";
/// Where they are in their packages. `grubnetaa64` is the network image (tftp, http, net
/// modules built in; prefix `/grub` on the server it came from).
const ARM64_SHIM: &str = "usr/lib/shim/shimaa64.efi.signed";
const ARM64_GRUB: &str = "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed";
/// busybox-static's binary, the one program in the initrd.
pub const BUSYBOX: &str = "/bin/busybox";
/// The file of the shared initrd in the HTTP root (`[boot] initrds`).
pub const SHARED_INITRD: &str = "shared-initrd.img";
/// The kernel in the HTTP root (`[boot] kernel`).
pub const KERNEL: &str = "vmlinuz";
/// The first-stage loaders the embedded default policy names, and snponly.efi.
pub const LOADERS: &[&str] = &[
    "undionly.kpxe",
    "ipxe-amd64.efi",
    "snponly.efi",
    "ipxe-arm64.efi",
];
/// Where the node's overlay puts its identity; the initrd's /init reads it.
pub const NODE_FILE: &str = "etc/xdpboot-node";
/// The line /init prints once it has read the overlay; followed by `node=… mac=… token=…`.
pub const MARKER: &str = "XDPBOOT-MARKER";
/// The line /init prints when the overlay did not arrive.
pub const NO_OVERLAY: &str = "XDPBOOT-NO-OVERLAY";
/// Bump when the initrd or the lab roots change shape: a cache with another stamp is rebuilt.
const LAB_STAMP_VERSION: u32 = 3;
/// How long apt may take for one command (a slow mirror, a 35 MB kernel package).
const APT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long unpacking or building one piece may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The initrd's /init. It proves what the node received: the shared initrd (this script and
/// `/etc/xdpboot-shared`) and the node's own overlay (`/etc/xdpboot-node`, only there when the
/// kernel unpacked the overlay cpio after the gzip-compressed shared one). Then it powers off
/// so QEMU exits (`-no-reboot`); `xdpboot.keep` on the command line keeps a shell on the
/// console instead (`cargo xtask run --keep`).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "xdpboot-initrd: /init running from $(cat /etc/xdpboot-shared) after $(cut -d' ' -f1 /proc/uptime) s"
if [ -r /etc/xdpboot-node ]; then
    hostname= mac= token=
    while IFS='=' read -r key value; do
        case "$key" in
            hostname) hostname=$value ;;
            mac) mac=$value ;;
            token) token=$value ;;
        esac
    done < /etc/xdpboot-node
    [ -n "$hostname" ] && hostname "$hostname"
    echo "XDPBOOT-MARKER node=$hostname mac=$mac token=$token"
else
    echo "XDPBOOT-NO-OVERLAY: /etc/xdpboot-node is missing: the node's overlay was not unpacked"
fi
if grep -qw xdpboot.keep /proc/cmdline; then
    echo "xdpboot-initrd: xdpboot.keep: a shell on the console; 'poweroff -f' ends this node"
    exec setsid cttyhack sh
fi
poweroff -f
"#;

/// Paths of everything cached.
#[derive(Debug, Clone)]
pub struct Assets {
    /// `.cache/`.
    pub cache: PathBuf,
    /// Debian 13's unpacked `usr/lib/ipxe`.
    pub ipxe: PathBuf,
    /// Debian 13's unpacked `usr/share/OVMF`.
    pub ovmf13: PathBuf,
    /// The kernel image.
    pub kernel: PathBuf,
    /// e.g. `6.12.117+deb13-cloud-amd64`.
    pub kernel_version: String,
    /// Package versions, for the log: `ipxe 1.21.1+…`, `ovmf 2025.02-…`.
    pub versions: Vec<(String, String)>,
    /// What the lab's `[loaders] search` names for the shim, GRUB and PXELINUX chains: the
    /// directories of Debian 13's [`SIGNED_CHAIN_PACKAGES`] and of [`PXELINUX_PACKAGES`].
    pub chain_loaders: Vec<PathBuf>,
    /// The same with Debian 12's shim and GRUB (no `http` module: GRUB fetches over TFTP).
    pub chain_loaders_debian12: Vec<PathBuf>,
    /// The lab's TFTP root.
    pub tftp_root: PathBuf,
    /// The lab's HTTP root.
    pub http_root: PathBuf,
    /// Length of the shared initrd before any padding (chosen not to be a multiple of 4, so
    /// serving it to EFI needs the server's padding).
    pub shared_initrd_len: u64,
}

/// The workspace's `.cache/`, or `$XDPBOOT_CACHE`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDPBOOT_CACHE") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .join(".cache")
}

impl Assets {
    /// Downloads, unpacks and builds whatever is missing, printing one line per step through
    /// `progress`. Safe to run concurrently and repeatedly.
    pub fn prepare(progress: &mut dyn FnMut(&str)) -> Result<Assets> {
        let cache = cache_dir();
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let lock_file = fs::File::create(cache.join(".lock"))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking .cache/.lock")?;

        let apt = PrivateApt::new(&cache.join("apt"), &cache.join("debs"), TRIXIE, None)?;
        let ipxe_deb = apt.package("ipxe", progress)?;
        let ovmf_deb = apt.package("ovmf", progress)?;
        let kernel_package = apt.kernel_package(KERNEL_METAPACKAGE, progress)?;
        let kernel_deb = apt.package(&kernel_package, progress)?;

        let ipxe =
            unpacked(&cache.join("debian13/ipxe"), &ipxe_deb, progress)?.join("usr/lib/ipxe");
        let ovmf13 =
            unpacked(&cache.join("debian13/ovmf"), &ovmf_deb, progress)?.join("usr/share/OVMF");
        let (kernel, kernel_version) = kernel_image(&cache.join("kernel"), &kernel_deb, progress)?;
        for loader in LOADERS {
            ensure!(
                ipxe.join(loader).is_file(),
                "{} has no {loader}",
                ipxe_deb.display()
            );
        }
        let mut versions: Vec<(String, String)> = [
            ("ipxe", &ipxe_deb),
            ("ovmf", &ovmf_deb),
            ("kernel", &kernel_deb),
        ]
        .into_iter()
        .map(|(name, deb)| (name.to_owned(), deb_version(deb)))
        .collect();
        let bookworm = PrivateApt::new(
            &cache.join("apt-bookworm"),
            &cache.join("debs-bookworm"),
            BOOKWORM,
            None,
        )?;
        let mut unpack = |apt: &PrivateApt, release: &str, packages: &[(&str, &str)]| {
            let mut dirs = Vec::new();
            for (package, dir) in packages {
                let deb = apt.package(package, progress)?;
                let unpacked = unpacked(&cache.join(release).join(package), &deb, progress)?;
                ensure!(
                    unpacked.join(dir).is_dir(),
                    "{} has no {dir}",
                    deb.display()
                );
                dirs.push(unpacked.join(dir));
                versions.push((format!("{package} ({release})"), deb_version(&deb)));
            }
            Ok::<_, anyhow::Error>(dirs)
        };
        let signed13 = unpack(&apt, "debian13", SIGNED_CHAIN_PACKAGES)?;
        let signed12 = unpack(&bookworm, "debian12", SIGNED_CHAIN_PACKAGES)?;
        let pxelinux = unpack(&bookworm, "debian12", PXELINUX_PACKAGES)?;
        let chain_loaders = [signed13, pxelinux.clone()].concat();
        let chain_loaders_debian12 = [signed12, pxelinux].concat();

        let lab = cache.join("lab");
        let stamp = format!(
            "v{LAB_STAMP_VERSION} {} {} {}\n",
            file_name(&ipxe_deb),
            file_name(&kernel_deb),
            busybox_identity(Path::new(BUSYBOX))?
        );
        if fs::read_to_string(lab.join("stamp")).ok().as_deref() != Some(stamp.as_str()) {
            progress("building the lab's boot files: busybox initrd, TFTP and HTTP roots");
            build_lab(&lab, &ipxe, &kernel, &stamp)?;
        }
        let http_root = lab.join("http");
        let shared_initrd_len = fs::metadata(http_root.join(SHARED_INITRD))?.len();
        Ok(Assets {
            ipxe,
            ovmf13,
            kernel,
            kernel_version,
            versions,
            chain_loaders,
            chain_loaders_debian12,
            tftp_root: lab.join("tftp"),
            http_root,
            shared_initrd_len,
            cache,
        })
    }

    /// Whether [`Assets::prepare`] has everything in `cache` already (so it would download
    /// nothing): the lab's roots and every loader chain's packages unpacked.
    pub fn is_prepared(cache: &Path) -> bool {
        let unpacked = |release: &str, packages: &[(&str, &str)]| {
            packages
                .iter()
                .all(|(package, dir)| cache.join(release).join(package).join(dir).is_dir())
        };
        cache.join("lab/stamp").is_file()
            && unpacked("debian13", SIGNED_CHAIN_PACKAGES)
            && unpacked("debian12", SIGNED_CHAIN_PACKAGES)
            && unpacked("debian12", PXELINUX_PACKAGES)
    }

    /// [`Assets::prepare`] once per process, quietly (tests).
    pub fn get() -> Result<&'static Assets> {
        static ASSETS: OnceLock<Result<Assets, String>> = OnceLock::new();
        ASSETS
            .get_or_init(|| {
                Assets::prepare(&mut |line| eprintln!("[assets] {line}"))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("preparing the firmware test assets: {e}"))
    }
}

/// What an arm64 node of the lab boots, besides `ipxe-arm64.efi` in the lab's TFTP root:
/// Debian 13's arm64 cloud kernel and an initrd of busybox-static:arm64 with the same /init as
/// the x86-64 one (so the same marker proves the chain). Fetched on first use only: an x86-only
/// run of the firmware tests downloads none of it.
#[derive(Debug, Clone)]
pub struct Arm64Assets {
    /// `.cache/arm64/http/vmlinuz`.
    pub kernel: PathBuf,
    /// e.g. `6.12.117+deb13-cloud-arm64`.
    pub kernel_version: String,
    /// `.cache/arm64/http/shared-initrd.img`: gzip, its length not a multiple of 4.
    pub initrd: PathBuf,
    /// Debian 13's `shimaa64.efi.signed` (Microsoft's signature) and `grubnetaa64.efi.signed`
    /// (Debian's), unpacked under `.cache/arm64/shim` and `.cache/arm64/grub`.
    pub shim: PathBuf,
    pub grub: PathBuf,
    /// Package versions, for the log.
    pub versions: Vec<(String, String)>,
}

impl Arm64Assets {
    /// Downloads, unpacks and builds whatever is missing (under the same lock as
    /// [`Assets::prepare`]).
    pub fn prepare(progress: &mut dyn FnMut(&str)) -> Result<Arm64Assets> {
        let cache = cache_dir();
        let dir = cache.join("arm64");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_file = fs::File::create(cache.join(".lock"))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking .cache/.lock")?;

        let apt = PrivateApt::new(&dir.join("apt"), &dir.join("debs"), TRIXIE, Some("arm64"))?;
        let busybox_deb = apt.package(ARM64_BUSYBOX_PACKAGE, progress)?;
        let kernel_package = apt.kernel_package(ARM64_KERNEL_METAPACKAGE, progress)?;
        let kernel_deb = apt.package(&kernel_package, progress)?;
        let unpacked_busybox = unpacked(&dir.join("busybox"), &busybox_deb, progress)?;
        // Debian 13 ships it in /usr/bin (merged /usr), Debian 12 in /bin.
        let busybox = ["usr/bin/busybox", "bin/busybox"]
            .iter()
            .map(|p| unpacked_busybox.join(p))
            .find(|p| p.is_file())
            .with_context(|| format!("{} has no busybox binary", busybox_deb.display()))?;
        let (kernel, kernel_version) = kernel_image(&dir.join("kernel"), &kernel_deb, progress)?;
        let shim_deb = apt.package(ARM64_SHIM_PACKAGE, progress)?;
        let grub_deb = apt.package(ARM64_GRUB_PACKAGE, progress)?;
        let shim = unpacked(&dir.join("shim"), &shim_deb, progress)?.join(ARM64_SHIM);
        let grub = unpacked(&dir.join("grub"), &grub_deb, progress)?.join(ARM64_GRUB);
        for (file, deb) in [(&shim, &shim_deb), (&grub, &grub_deb)] {
            ensure!(
                file.is_file(),
                "{} has no {}",
                deb.display(),
                file.display()
            );
        }
        let versions = [
            ("busybox-static:arm64", &busybox_deb),
            ("kernel:arm64", &kernel_deb),
            ("shim-signed:arm64", &shim_deb),
            ("grub-efi-arm64-signed", &grub_deb),
        ]
        .into_iter()
        .map(|(name, deb)| (name.to_owned(), deb_version(deb)))
        .collect();

        let http = dir.join("http");
        let stamp = format!(
            "v{LAB_STAMP_VERSION} {} {}\n",
            file_name(&kernel_deb),
            file_name(&busybox_deb)
        );
        if fs::read_to_string(http.join("stamp")).ok().as_deref() != Some(stamp.as_str()) {
            progress("building the arm64 boot files: kernel and busybox:arm64 initrd");
            let tmp = http.with_extension("new");
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp)?;
            fs::copy(&kernel, tmp.join(KERNEL))?;
            build_initrd(&dir.join("initrd-root"), &tmp.join(SHARED_INITRD), &busybox)?;
            fs::remove_dir_all(dir.join("initrd-root"))?;
            fs::write(tmp.join("stamp"), &stamp)?;
            let _ = fs::remove_dir_all(&http);
            fs::rename(&tmp, &http)?;
        }
        Ok(Arm64Assets {
            kernel: http.join(KERNEL),
            kernel_version,
            initrd: http.join(SHARED_INITRD),
            shim,
            grub,
            versions,
        })
    }

    /// The directories of the signed shim and GRUB, for `[loaders] search` (xdpboot serves
    /// them as `shimaa64.efi` and `grubaa64.efi`).
    pub fn chain_loaders(&self) -> Vec<PathBuf> {
        [&self.shim, &self.grub]
            .into_iter()
            .filter_map(|file| file.parent().map(Path::to_owned))
            .collect()
    }

    /// [`Arm64Assets::prepare`] once per process, quietly (tests).
    pub fn get() -> Result<&'static Arm64Assets> {
        static ASSETS: OnceLock<Result<Arm64Assets, String>> = OnceLock::new();
        ASSETS
            .get_or_init(|| {
                Arm64Assets::prepare(&mut |line| eprintln!("[assets] {line}"))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("preparing the arm64 firmware test assets: {e}"))
    }
}

/// A Debian suite packages are downloaded from, each through an apt configuration of its own.
#[derive(Debug, Clone, Copy)]
struct Suite {
    name: &'static str,
    /// For progress lines: "Debian 13".
    release: &'static str,
}

impl Suite {
    /// Its sources.list line, for `arch`'s packages (`None`: the host's).
    fn source(self, arch: Option<&str>) -> String {
        let arch = arch.map(|a| format!("arch={a} ")).unwrap_or_default();
        format!(
            "deb [{arch}signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {} main",
            self.name
        )
    }
}

/// apt-get with a configuration of its own (`.cache/apt/`, `.cache/apt-bookworm/`, or
/// `.cache/arm64/apt/` for another architecture's packages).
struct PrivateApt {
    suite: Suite,
    dir: PathBuf,
    debs: PathBuf,
    /// A Debian architecture other than the host's, e.g. `arm64`.
    arch: Option<&'static str>,
}

impl PrivateApt {
    fn new(
        dir: &Path,
        debs: &Path,
        suite: Suite,
        arch: Option<&'static str>,
    ) -> Result<PrivateApt> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(
            dir.join("sources.list"),
            format!("{}\n", suite.source(arch)),
        )?;
        fs::create_dir_all(debs)?;
        Ok(PrivateApt {
            suite,
            dir: dir.to_owned(),
            debs: debs.to_owned(),
            arch,
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        if let Some(arch) = self.arch {
            // Lists and downloads of this architecture only, as if apt ran on it.
            for key in ["APT::Architecture", "APT::Architectures"] {
                command.arg("-o").arg(format!("{key}={arch}"));
            }
        }
        for (key, value) in [
            ("Dir::Etc::sourcelist", d("sources.list")),
            ("Dir::Etc::sourceparts", d("sources.list.d")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            // Our own lists, guarded by .cache/.lock: the system's apt lock is not ours to take.
            ("Debug::NoLocking", "1".into()),
            ("APT::Sandbox::User", "root".into()),
            ("Acquire::Languages", "none".into()),
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled",
                "false".into(),
            ),
        ] {
            command.arg("-o").arg(format!("{key}={value}"));
        }
        command
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(self.suite.name))
        })
    }

    fn update(&self, progress: &mut dyn FnMut(&str)) -> Result<()> {
        progress(&format!(
            "apt-get update (private configuration, {} {}{})",
            self.suite.release,
            self.suite.name,
            self.arch.map(|a| format!(", {a}")).unwrap_or_default()
        ));
        run_command(self.command("apt-get").arg("update"), APT_TIMEOUT)?;
        Ok(())
    }

    /// The cached `.deb` of `package`, downloading the current one when none is cached.
    fn package(&self, package: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        if let Some(deb) = self.cached(package) {
            progress(&format!("{package}: {} (cached)", file_name(&deb)));
            return Ok(deb);
        }
        if !self.has_lists() {
            self.update(progress)?;
        }
        progress(&format!(
            "{package}: apt-get download from {}",
            self.suite.release
        ));
        let download = |apt: &PrivateApt| {
            run_command(
                apt.command("apt-get")
                    .args(["download", package])
                    .current_dir(&apt.debs),
                APT_TIMEOUT,
            )
        };
        if let Err(first) = download(self) {
            // Lists from an earlier run may name a version the mirror no longer has.
            progress(&format!("{package}: {first:#}; refreshing the lists once"));
            self.update(progress)?;
            download(self)?;
        }
        self.cached(package)
            .with_context(|| format!("apt-get download {package} left no .deb"))
    }

    fn cached(&self, package: &str) -> Option<PathBuf> {
        let prefix = format!("{package}_");
        let mut found: Vec<PathBuf> = fs::read_dir(&self.debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = file_name(p);
                name.starts_with(&prefix) && name.ends_with(".deb")
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// The versioned image package `metapackage` depends on; a cached one if any.
    fn kernel_package(&self, metapackage: &str, progress: &mut dyn FnMut(&str)) -> Result<String> {
        if let Some(deb) = fs::read_dir(&self.debs)?
            .flatten()
            .map(|e| file_name(&e.path()))
            .find(|name| name.starts_with("linux-image-") && name.ends_with(".deb"))
        {
            return Ok(deb.split('_').next().unwrap_or_default().to_owned());
        }
        if !self.has_lists() {
            self.update(progress)?;
        }
        let show = run_command(
            self.command("apt-cache").args(["show", metapackage]),
            APT_TIMEOUT,
        )?;
        show.lines()
            .find_map(|line| line.strip_prefix("Depends:"))
            .and_then(|deps| {
                deps.split([',', ' '])
                    .find(|d| d.starts_with("linux-image-"))
            })
            .map(str::to_owned)
            .with_context(|| format!("{metapackage} names no linux-image package"))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `ipxe_1.21.1+git…_all.deb` → `1.21.1+git…`.
fn deb_version(deb: &Path) -> String {
    file_name(deb).split('_').nth(1).unwrap_or("?").to_owned()
}

/// `deb` unpacked into `dir` (replaced when it holds another package file).
fn unpacked(dir: &Path, deb: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let stamp = dir.join(".from");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(file_name(deb).as_str()) {
        return Ok(dir.to_owned());
    }
    progress(&format!(
        "unpacking {} (dpkg-deb -x, not installed)",
        file_name(deb)
    ));
    let tmp = dir.with_extension("new");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    run_command(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
        BUILD_TIMEOUT,
    )?;
    fs::write(tmp.join(".from"), file_name(deb))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(dir.to_owned())
}

/// The kernel image out of its package (only `boot/`: the modules are not needed).
fn kernel_image(
    dir: &Path,
    deb: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathBuf, String)> {
    let find = |dir: &Path| -> Option<(PathBuf, String)> {
        fs::read_dir(dir.join("boot"))
            .ok()?
            .flatten()
            .find_map(|e| {
                let name = file_name(&e.path());
                let version = name.strip_prefix("vmlinuz-")?.to_owned();
                Some((e.path(), version))
            })
    };
    let stamp = dir.join(".from");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(file_name(deb).as_str())
        && let Some(found) = find(dir)
    {
        return Ok(found);
    }
    progress(&format!("unpacking the kernel from {}", file_name(deb)));
    let tmp = dir.with_extension("new");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    run_command(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' ./boot",
            deb.display(),
            tmp.display()
        )),
        BUILD_TIMEOUT,
    )?;
    fs::write(tmp.join(".from"), file_name(deb))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    find(dir).with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
}

/// Size and mtime of busybox, so an upgrade of busybox-static rebuilds the initrd.
fn busybox_identity(busybox: &Path) -> Result<String> {
    let meta = fs::metadata(busybox)
        .with_context(|| format!("{} is missing: install busybox-static", busybox.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(format!("busybox:{}:{mtime}", meta.len()))
}

/// Builds `.cache/lab/` afresh: the initrd and both roots.
fn build_lab(lab: &Path, ipxe: &Path, kernel: &Path, stamp: &str) -> Result<()> {
    let tmp = lab.with_extension("new");
    let _ = fs::remove_dir_all(&tmp);
    let (tftp, http) = (tmp.join("tftp"), tmp.join("http"));
    fs::create_dir_all(&tftp)?;
    fs::create_dir_all(&http)?;
    for loader in LOADERS {
        fs::copy(ipxe.join(loader), tftp.join(loader))?;
        fs::copy(ipxe.join(loader), http.join(loader))?;
    }
    fs::copy(kernel, http.join(KERNEL))?;
    build_initrd(
        &tmp.join("initrd-root"),
        &http.join(SHARED_INITRD),
        Path::new(BUSYBOX),
    )?;
    fs::remove_dir_all(tmp.join("initrd-root"))?;
    fs::write(tmp.join("stamp"), stamp)?;
    let _ = fs::remove_dir_all(lab);
    fs::rename(&tmp, lab)?;
    Ok(())
}

/// The shared initrd: `busybox` and /init, as a gzip-compressed newc cpio (what Debian's
/// initramfs-tools ships, and the case DESIGN.md's EFI alignment fact is about), byte for byte
/// the same on every machine with the same busybox (mtimes 0, inode numbers renumbered). Its length
/// is made not to be a multiple of 4, so that only the server's padding lets an uncompressed
/// overlay behind it be found on EFI.
fn build_initrd(root: &Path, out: &Path, busybox: &Path) -> Result<()> {
    build_initrd_with(root, out, busybox, INIT)
}

/// An initrd like the shared one (busybox, gzip-compressed newc cpio, its length not a
/// multiple of 4) whose /init is `init`: other tests' ramdisks (tests/ironic_files.rs).
pub fn build_initrd_with(root: &Path, out: &Path, busybox: &Path, init: &str) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    for dir in ["bin", "dev", "etc", "proc", "sys", "root", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    fs::write(root.join("init"), init)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    // The console must exist before devtmpfs is mounted: the kernel opens /dev/console for
    // init's stdio right after unpacking.
    run_command(
        Command::new("mknod")
            .args(["-m", "600"])
            .arg(root.join("dev/console"))
            .args(["c", "5", "1"]),
        BUILD_TIMEOUT,
    )?;
    for pad in 0..4 {
        let mut shared = fs::File::create(root.join("etc/xdpboot-shared"))?;
        // The padding changes the compressed length until it is not a multiple of 4.
        writeln!(
            shared,
            "xdpboot shared initrd v{LAB_STAMP_VERSION}{}",
            ".".repeat(pad)
        )?;
        drop(shared);
        run_command(
            Command::new("sh").arg("-c").arg(format!(
                "cd '{}' && find . -exec touch -h -d @0 {{}} + && \
                 find . -mindepth 1 | LC_ALL=C sort | \
                 cpio --quiet --reproducible -o -H newc --owner=0:0 | gzip -9n > '{}'",
                root.display(),
                out.display()
            )),
            BUILD_TIMEOUT,
        )?;
        if fs::metadata(out)?.len() % 4 != 0 {
            return Ok(());
        }
    }
    bail!("could not make the initrd's length other than a multiple of 4")
}
