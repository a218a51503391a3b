//! Where loaders come from when the operator has not put them in a root: the directories of
//! the distribution's packages (`[loaders] search`), looked up only for the loaders those
//! packages ship, under the names each release gives them. This is what makes
//! `apt-get install ipxe && xdpboot run -i eth1` answer every PXE ROM with the embedded
//! default, as pixiecore does with its built-in iPXE, and `apt-get install shim-signed
//! grub-efi-amd64-signed` all a Secure Boot chain needs.
//!
//! - `ipxe`: Debian 12's (1.0.0+git-20190125) puts `undionly.kpxe`, `snponly.efi` and an
//!   x86_64 `ipxe.efi` in `/usr/lib/ipxe` (the last a symlink to `/boot/ipxe.efi`); Debian 13's
//!   (1.21.1+git20250501) names the EFI builds `ipxe-amd64.efi`, `ipxe-arm64.efi`,
//!   `ipxe-riscv64.efi` and keeps `ipxe.efi` as a link to the amd64 one.
//! - `shim-signed`: `/usr/lib/shim/shimx64.efi.signed` (arm64: `shimaa64.efi.signed`), signed
//!   by Microsoft's UEFI CA; served as `shimx64.efi`.
//! - `grub-efi-amd64-signed` (arm64: `grub-efi-arm64-signed`): in `/usr/lib/grub/x86_64-efi-signed`,
//!   the network build `grubnetx64.efi.signed`, signed by the distribution, with the prefix
//!   `/grub` built in; served as `grubx64.efi`, the name shim fetches. Debian 12's (2.06) has
//!   the `tftp` module but not `http`; Debian 13's (2.12) has both ([`grub_modules`] reads
//!   which).
//! - `pxelinux` and `syslinux-common`: `/usr/lib/PXELINUX/lpxelinux.0` and the BIOS modules
//!   in `/usr/lib/syslinux/modules/bios` (`ldlinux.c32`, which lpxelinux loads first).
//!
//! A search directory is the package's, not a root a client may browse: only a name in
//! [`KNOWN_LOADERS`] is looked up there, so a request cannot reach any other file of it, and
//! the package's own symlinks are followed wherever they point. xdpboot serves the files as
//! they are: a signed loader stays signed by its distribution.

use std::path::{Path, PathBuf};

/// Each loader a policy may name, with the file names it has in the `ipxe` package's
/// releases, preferred first.
pub const KNOWN_LOADERS: &[(&str, &[&str])] = &[
    ("undionly.kpxe", &["undionly.kpxe"]),
    ("undionly.kkpxe", &["undionly.kkpxe"]),
    ("ipxe.pxe", &["ipxe.pxe"]),
    ("snponly.efi", &["snponly.efi"]),
    // Metal3's and Ironic's name for the x86_64 snponly build.
    ("snponly-x86_64.efi", &["snponly.efi"]),
    ("ipxe-amd64.efi", &["ipxe-amd64.efi", "ipxe.efi"]),
    ("ipxe.efi", &["ipxe.efi", "ipxe-amd64.efi"]),
    ("ipxe-arm64.efi", &["ipxe-arm64.efi"]),
    ("ipxe-riscv64.efi", &["ipxe-riscv64.efi"]),
    ("shimx64.efi", &["shimx64.efi.signed", "shimx64.efi"]),
    ("shimaa64.efi", &["shimaa64.efi.signed", "shimaa64.efi"]),
    // The network builds: their prefix is on the server they came from. (`grubx64.efi.signed`
    // is the disk build, whose prefix is on a local disk.)
    ("grubx64.efi", &["grubnetx64.efi.signed", "grubnetx64.efi"]),
    (
        "grubaa64.efi",
        &["grubnetaa64.efi.signed", "grubnetaa64.efi"],
    ),
    ("lpxelinux.0", &["lpxelinux.0"]),
    ("pxelinux.0", &["pxelinux.0"]),
    ("ldlinux.c32", &["ldlinux.c32"]),
    // What a PXELINUX menu needs besides ldlinux.c32.
    ("libcom32.c32", &["libcom32.c32"]),
    ("libutil.c32", &["libutil.c32"]),
    ("menu.c32", &["menu.c32"]),
];

/// Bounds of [`grub_modules`]' walk over an image (GRUB builds carry about 100 modules of a
/// few dozen sections each).
const MAX_PE_SECTIONS: usize = 96;
const MAX_GRUB_MODULES: usize = 1024;
const MAX_ELF_SECTIONS: usize = 256;
/// `grub_module_info64.magic`, "mimg" (GRUB `include/grub/kernel.h`).
const GRUB_MODULE_MAGIC: u32 = 0x676d_696d;
/// `OBJ_TYPE_ELF`: a module (the other objects are the memdisk, the config and the prefix).
const GRUB_OBJ_TYPE_ELF: u32 = 0;

/// The names of the modules built into a 64-bit GRUB EFI image (what `grub-mkimage` put in its
/// `mods` section: GRUB `util/mkimage.c`), or `None` when `image` is not one. Under Secure
/// Boot a GRUB loads no module from the network, so only these decide what it can do: whether
/// it can fetch a kernel over HTTP (`http`) or only over TFTP (`tftp`).
pub fn grub_modules(image: &[u8]) -> Option<Vec<&str>> {
    let u16_at = |b: &[u8], at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], at: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
    };
    // PE/COFF: the section table after the optional header (PE format, "Section Table").
    let pe = u32_at(image, 0x3c)? as usize;
    if image.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(image, pe + 6)?.min(MAX_PE_SECTIONS);
    let table = pe + 24 + u16_at(image, pe + 20)?;
    let mods = (0..sections).find_map(|i| {
        let entry = image.get(table + 40 * i..table + 40 * i + 40)?;
        if !entry.starts_with(b"mods") {
            return None;
        }
        let (size, at) = (u32_at(entry, 16)? as usize, u32_at(entry, 20)? as usize);
        image.get(at..at.checked_add(size)?)
    })?;
    // grub_module_info64: magic, padding, offset and size of the module area.
    if u32_at(mods, 0)? != GRUB_MODULE_MAGIC {
        return None;
    }
    let (mut at, end) = (u64_at(mods, 8)?, u64_at(mods, 16)?.min(mods.len()));
    let mut names = Vec::new();
    while at < end && names.len() < MAX_GRUB_MODULES {
        // grub_module_header: type, size (header included).
        let (kind, size) = (u32_at(mods, at)?, u32_at(mods, at + 4)? as usize);
        let object = mods.get(at + 8..at.checked_add(size)?)?;
        if size < 8 {
            return None;
        }
        if kind == GRUB_OBJ_TYPE_ELF
            && let Some(name) = elf_section(object, b".modname")
        {
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            names.push(std::str::from_utf8(name).ok()?);
        }
        at += size;
    }
    Some(names)
}

/// The contents of the ELF64 section called `wanted` (ELF: section header table, `e_shstrndx`).
fn elf_section<'a>(elf: &'a [u8], wanted: &[u8]) -> Option<&'a [u8]> {
    let field = |at: usize, len: usize| -> Option<usize> {
        let bytes = elf.get(at..at + len)?;
        let mut value = [0u8; 8];
        value[..len].copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(value)).ok()
    };
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let (table, entry, count) = (field(0x28, 8)?, field(0x3a, 2)?, field(0x3c, 2)?);
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let at = table.checked_add(i.checked_mul(entry)?)?;
        // sh_name, sh_offset, sh_size
        Some((field(at, 4)?, field(at + 24, 8)?, field(at + 32, 8)?))
    };
    let (_, names_at, names_len) = header(field(0x3e, 2)?)?;
    let names = elf.get(names_at..names_at.checked_add(names_len)?)?;
    (0..count.min(MAX_ELF_SECTIONS)).find_map(|i| {
        let (name, at, len) = header(i)?;
        let name = names.get(name..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        (name == wanted).then(|| elf.get(at..at.checked_add(len)?))?
    })
}

/// The directories searched, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoaderSearch {
    dirs: Vec<PathBuf>,
}

impl LoaderSearch {
    pub fn new(dirs: Vec<PathBuf>) -> LoaderSearch {
        LoaderSearch { dirs }
    }

    /// The file serving the loader `name` (a policy's name for it, as a request gives it: no
    /// directory part), canonical: the first search directory holding it under one of its
    /// names. `None` for names that are not known loaders.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        let (_, names) = KNOWN_LOADERS.iter().find(|(known, _)| *known == name)?;
        self.dirs.iter().find_map(|dir| {
            names.iter().find_map(|file| {
                let path = dir.join(file).canonicalize().ok()?;
                path.is_file().then_some(path)
            })
        })
    }

    /// [`LoaderSearch::find`] for a path relative to a root: only a bare file name can be a
    /// loader from the search.
    pub fn find_relative(&self, relative: &Path) -> Option<PathBuf> {
        let mut parts = relative.components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(name)), None) => self.find(name.to_str()?),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(role: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "xdpboot-loaders-{role}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    #[test]
    fn debian_12_names_serve_the_policy_s_names_and_its_symlinks_are_followed() {
        // Debian 12: ipxe.efi is a link out of the directory (to /boot/ipxe.efi).
        let boot = dir("boot");
        let lib = dir("lib");
        std::fs::write(boot.0.join("ipxe.efi"), b"efi").unwrap();
        std::os::unix::fs::symlink(boot.0.join("ipxe.efi"), lib.0.join("ipxe.efi")).unwrap();
        std::fs::write(lib.0.join("undionly.kpxe"), b"kpxe").unwrap();
        std::fs::write(lib.0.join("ipxe.lkrn"), b"not a loader we serve").unwrap();
        let search = LoaderSearch::new(vec![PathBuf::from("/nonexistent"), lib.0.clone()]);
        let efi = boot.0.join("ipxe.efi").canonicalize().unwrap();
        assert_eq!(search.find("ipxe-amd64.efi"), Some(efi.clone()));
        assert_eq!(search.find("ipxe.efi"), Some(efi));
        assert_eq!(
            search.find("undionly.kpxe"),
            Some(lib.0.join("undionly.kpxe").canonicalize().unwrap())
        );
        assert_eq!(search.find("ipxe-arm64.efi"), None, "not in Debian 12");
        assert_eq!(search.find("ipxe.lkrn"), None, "not a known loader");
        assert_eq!(search.find("../lib/undionly.kpxe"), None);
    }

    #[test]
    fn debian_13_names_are_preferred_and_only_bare_names_are_searched() {
        let lib = dir("lib13");
        std::fs::write(lib.0.join("ipxe-amd64.efi"), b"amd64").unwrap();
        std::os::unix::fs::symlink("ipxe-amd64.efi", lib.0.join("ipxe.efi")).unwrap();
        std::fs::write(lib.0.join("ipxe-arm64.efi"), b"arm64").unwrap();
        let search = LoaderSearch::new(vec![lib.0.clone()]);
        let amd64 = lib.0.join("ipxe-amd64.efi");
        assert_eq!(search.find("ipxe.efi"), Some(amd64.clone()));
        assert_eq!(
            search.find_relative(Path::new("ipxe-amd64.efi")),
            Some(amd64)
        );
        assert_eq!(search.find_relative(Path::new("sub/ipxe-amd64.efi")), None);
        assert!(search.find("ipxe-arm64.efi").is_some());
        assert_eq!(LoaderSearch::default().find("ipxe-arm64.efi"), None);
    }
}
