//! Where first-stage loaders come from when the operator has not put them in a root: the
//! directories of the distribution's `ipxe` package (`[loaders] search`), looked up only for
//! the loaders iPXE ships, under the names each release gives them. This is what makes
//! `apt-get install ipxe && xdpboot run -i eth1` answer every PXE ROM with the embedded
//! default, as pixiecore does with its built-in iPXE.
//!
//! Debian 12's `ipxe` (1.0.0+git-20190125) puts `undionly.kpxe`, `snponly.efi` and an x86_64
//! `ipxe.efi` in `/usr/lib/ipxe` (the last a symlink to `/boot/ipxe.efi`); Debian 13's
//! (1.21.1+git20250501) names the EFI builds `ipxe-amd64.efi`, `ipxe-arm64.efi`,
//! `ipxe-riscv64.efi` and keeps `ipxe.efi` as a link to the amd64 one.
//!
//! A search directory is the package's, not a root a client may browse: only a name in
//! [`KNOWN_LOADERS`] is looked up there, so a request cannot reach any other file of it, and
//! the package's own symlinks are followed wherever they point.

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
];

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
