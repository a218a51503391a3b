//! The TFTP root: names resolved inside it, and the files' bytes cached so every transfer of a
//! loader shares one copy (`Arc<[u8]>`) however many clients boot at once.
//!
//! Resolution canonicalizes `root/name` and requires the result to lie inside the canonical
//! root: symlinks, of files or of directories, are followed while their target stays inside
//! the root (Ironic's `pxelinux.cfg/01-<mac>` → `../<uuid>/config`), and one pointing out of it
//! is refused; only regular files are served.
//! Missing files get ERROR 1, refused ones ERROR 2.
//!
//! Each request checks the file's identity (device, inode, size, mtime, ctime) with one
//! `stat`; a cached copy is used only while all of them match, so a loader replaced in the
//! root (by rename or in place) is served fresh from the next request on. (On kernels before
//! 6.13, file timestamps tick coarsely, so a same-size rewrite in place within one tick of the
//! previous change could go unseen; replacing files by rename, as package managers do, never
//! does.) Loads are done one
//! at a time, so a boot storm on a cold cache reads each file once rather than once per client.
//! A file whose identity changes while it is read is refused for that request rather than
//! served half old, half new.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::packet::ErrorCode;
use super::request::RelativePath;
use crate::loaders::LoaderSearch;

/// The largest file served: TFTP carries first-stage loaders (about 1 MiB); kernels and images
/// go over HTTP.
pub const MAX_FILE_LEN: u64 = 256 * 1024 * 1024;
/// Files kept in the cache; beyond this, files no transfer is using are evicted.
pub const MAX_CACHED_FILES: usize = 64;
/// Bytes kept in the cache; beyond this, files no transfer is using are evicted.
pub const MAX_CACHED_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not found")]
    NotFound,
    #[error("resolves outside the TFTP root")]
    OutsideRoot,
    #[error("not a regular file")]
    NotAFile,
    #[error("permission denied")]
    PermissionDenied,
    #[error("larger than {MAX_FILE_LEN} bytes")]
    TooLarge,
    #[error("changed while being read")]
    Changing,
    #[error("reading it failed: {0}")]
    Io(io::Error),
}

impl FileError {
    /// The ERROR packet to send (RFC 1350 error codes).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FileError::NotFound => ErrorCode::FileNotFound,
            FileError::OutsideRoot | FileError::NotAFile | FileError::PermissionDenied => {
                ErrorCode::AccessViolation
            }
            FileError::TooLarge | FileError::Changing | FileError::Io(_) => ErrorCode::NotDefined,
        }
    }

    /// The ERROR packet's message: short, and saying nothing about the server's layout.
    pub fn message(&self) -> &'static str {
        match self {
            FileError::NotFound => "file not found",
            FileError::OutsideRoot | FileError::NotAFile | FileError::PermissionDenied => {
                "access violation"
            }
            FileError::TooLarge => "file too large for TFTP",
            FileError::Changing => "file is being replaced, try again",
            FileError::Io(_) => "read error",
        }
    }

    /// A stable label for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            FileError::NotFound => "not_found",
            FileError::OutsideRoot => "outside_root",
            FileError::NotAFile => "not_a_file",
            FileError::PermissionDenied => "permission_denied",
            FileError::TooLarge => "too_large",
            FileError::Changing => "changing",
            FileError::Io(_) => "io_error",
        }
    }

    fn from_io(e: io::Error) -> FileError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => FileError::NotFound,
            io::ErrorKind::PermissionDenied => FileError::PermissionDenied,
            _ => FileError::Io(e),
        }
    }
}

/// Files made for the client asking rather than read from the root: the per-node configs of
/// the loaders after the firmware (GRUB, PXELINUX), and the kernel, initrds and overlay for a
/// GRUB that fetches them over TFTP. Asked only for names the root and the loader search do
/// not have, so a file in the root wins. The daemon's implementation is the HTTP side's boot
/// content (`crate::http::scripts::BootContent`).
pub trait Generator: Send + Sync {
    /// The file `name` for `client`, which sent its request to our address `local`; `None`
    /// when `name` is not one this generator makes.
    fn generate<'a>(&'a self, name: &'a str, client: SocketAddr, local: IpAddr) -> Generating<'a>;
}

/// What [`Generator::generate`] returns: the file, once made (`None`: not a name it makes).
pub type Generating<'a> =
    Pin<Box<dyn Future<Output = Option<Result<Generated, FileError>>> + Send + 'a>>;

/// What a [`Generator`] made.
#[derive(Debug, Clone)]
pub enum Generated {
    Bytes(Arc<[u8]>),
    /// A file the config names, wherever it is (trusted, as the loader search's are); read
    /// through the cache.
    File(PathBuf),
}

/// Which version of a file a cached copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Cached {
    identity: Identity,
    bytes: Arc<[u8]>,
    used: Instant,
}

/// The files of one TFTP root, cached by canonical path and identity.
#[derive(Debug)]
pub struct FileCache {
    root: PathBuf,
    loaders: LoaderSearch,
    entries: Mutex<HashMap<PathBuf, Cached>>,
    /// Held while a file is read, so concurrent misses read it once.
    loading: tokio::sync::Mutex<()>,
}

impl FileCache {
    pub fn new(root: &Path, loaders: LoaderSearch) -> FileCache {
        FileCache {
            root: root.to_path_buf(),
            loaders,
            entries: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The bytes of `name` under the root (or, for a known loader missing there, from the
    /// `ipxe` package: [`LoaderSearch`]), from the cache when current. File system calls run on
    /// tokio's blocking pool.
    pub async fn open(&self, name: &RelativePath) -> Result<Arc<[u8]>, FileError> {
        let (root, joined) = (self.root.clone(), self.root.join(name.as_str()));
        let (loaders, relative) = (self.loaders.clone(), PathBuf::from(name.as_str()));
        let (path, identity) = blocking(move || match resolve(&root, &joined) {
            Err(FileError::NotFound) => match loaders.find_relative(&relative) {
                Some(found) => resolve_trusted(&found),
                None => Err(FileError::NotFound),
            },
            resolved => resolved,
        })
        .await?;
        self.read_cached(path, identity).await
    }

    /// The bytes of a file the config names (`[boot] kernel`, an initrd), from the cache when
    /// current: trusted, so not confined to the root; still a regular file only.
    pub async fn open_trusted(&self, path: PathBuf) -> Result<Arc<[u8]>, FileError> {
        let (path, identity) = blocking(move || {
            let path = path.canonicalize().map_err(FileError::from_io)?;
            resolve_trusted(&path)
        })
        .await?;
        self.read_cached(path, identity).await
    }

    async fn read_cached(&self, path: PathBuf, identity: Identity) -> Result<Arc<[u8]>, FileError> {
        if let Some(bytes) = self.lookup(&path, identity) {
            return Ok(bytes);
        }
        let _loading = self.loading.lock().await;
        if let Some(bytes) = self.lookup(&path, identity) {
            return Ok(bytes); // another request loaded it while we waited
        }
        let read_path = path.clone();
        let (bytes, identity) = blocking(move || read(&read_path)).await?;
        self.insert(path, identity, bytes.clone());
        Ok(bytes)
    }

    /// How many files are cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Cached>> {
        // A panic while holding the lock leaves a consistent map (every update is one insert
        // or remove), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, path: &Path, identity: Identity) -> Option<Arc<[u8]>> {
        let mut entries = self.lock();
        let entry = entries.get_mut(path).filter(|e| e.identity == identity)?;
        entry.used = Instant::now();
        Some(entry.bytes.clone())
    }

    fn insert(&self, path: PathBuf, identity: Identity, bytes: Arc<[u8]>) {
        let mut entries = self.lock();
        entries.insert(
            path,
            Cached {
                identity,
                bytes,
                used: Instant::now(),
            },
        );
        // Evict the least recently used files no transfer holds. Files in use stay: dropping
        // them would free nothing and make the next request read a second copy.
        loop {
            let total: u64 = entries.values().map(|e| e.bytes.len() as u64).sum();
            if entries.len() <= MAX_CACHED_FILES && total <= MAX_CACHED_BYTES {
                break;
            }
            let idle = entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.bytes) == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| p.clone());
            match idle {
                Some(p) => entries.remove(&p),
                None => break,
            };
        }
    }
}

/// Runs blocking file system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FileError::Io(io::Error::other(e))))
}

/// The canonical path of `joined` (= root/name) if it is a regular file inside the root.
fn resolve(root: &Path, joined: &Path) -> Result<(PathBuf, Identity), FileError> {
    let root = root.canonicalize().map_err(FileError::from_io)?;
    let path = joined.canonicalize().map_err(FileError::from_io)?;
    if !path.starts_with(&root) {
        return Err(FileError::OutsideRoot);
    }
    let meta = path.metadata().map_err(FileError::from_io)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    Ok((path, Identity::of(&meta)))
}

/// A file the loader search found: trusted (the package's own symlinks are followed), still
/// a regular file only.
fn resolve_trusted(path: &Path) -> Result<(PathBuf, Identity), FileError> {
    let meta = path.metadata().map_err(FileError::from_io)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    Ok((path.to_path_buf(), Identity::of(&meta)))
}

/// Reads a whole file, bounded by [`MAX_FILE_LEN`], checking it did not change meanwhile.
fn read(path: &Path) -> Result<(Arc<[u8]>, Identity), FileError> {
    let mut file = std::fs::File::open(path).map_err(FileError::from_io)?;
    let before = Identity::of(&file.metadata().map_err(FileError::from_io)?);
    if before.len > MAX_FILE_LEN {
        return Err(FileError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(before.len).unwrap_or(0));
    // One byte more than allowed tells a file that grew past the bound.
    file.by_ref()
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::from_io)?;
    let after = Identity::of(&file.metadata().map_err(FileError::from_io)?);
    if after != before || bytes.len() as u64 != before.len {
        return Err(FileError::Changing);
    }
    Ok((bytes.into(), before))
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

    fn dir(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("xdpboot-tftp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("root/sub")).unwrap();
        Dir(path)
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(f)
    }

    fn name(s: &str) -> RelativePath {
        RelativePath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn tftp_files_resolve_only_inside_the_root() {
        let d = dir("resolve");
        let root = d.0.join("root");
        std::fs::write(root.join("undionly.kpxe"), b"loader").unwrap();
        std::fs::write(root.join("sub/inner.efi"), b"inner").unwrap();
        std::fs::write(d.0.join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.0.join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("sub/inner.efi", root.join("alias.efi")).unwrap();
        std::os::unix::fs::symlink(d.0.join("nowhere"), root.join("dangling")).unwrap();
        let cache = FileCache::new(&root, LoaderSearch::default());

        assert_eq!(
            &*block_on(cache.open(&name("undionly.kpxe"))).unwrap(),
            b"loader"
        );
        assert_eq!(
            &*block_on(cache.open(&name("sub/inner.efi"))).unwrap(),
            b"inner"
        );
        assert_eq!(
            &*block_on(cache.open(&name("alias.efi"))).unwrap(),
            b"inner"
        );
        let code = |n: &str| block_on(cache.open(&name(n))).unwrap_err().error_code();
        assert_eq!(code("escape"), ErrorCode::AccessViolation);
        assert_eq!(code("sub"), ErrorCode::AccessViolation);
        assert_eq!(code("missing.efi"), ErrorCode::FileNotFound);
        assert_eq!(code("dangling"), ErrorCode::FileNotFound);
        assert_eq!(code("undionly.kpxe/x"), ErrorCode::FileNotFound);
    }

    /// Ironic's `pxe` interface links `pxelinux.cfg/01-<mac>`, `grub.cfg-01-<mac>` and
    /// `<mac>.conf` to `<uuid>/config` with relative symlinks; a directory symlinked inside the
    /// root is followed like a file one; one leading out of the root stays refused.
    #[test]
    fn symlinked_directories_inside_the_tftp_root_are_followed_and_ones_out_of_it_refused() {
        let d = dir("symlinked-dirs");
        let root = d.0.join("root");
        std::fs::create_dir_all(root.join("ironic-39/uuid")).unwrap();
        std::fs::create_dir_all(root.join("ironic-39/pxelinux.cfg")).unwrap();
        std::fs::write(root.join("ironic-39/uuid/config"), b"config").unwrap();
        std::os::unix::fs::symlink(
            "../uuid/config",
            root.join("ironic-39/pxelinux.cfg/01-52-54-00-18-01-01"),
        )
        .unwrap();
        std::os::unix::fs::symlink("ironic-39", root.join("ironic")).unwrap();
        std::fs::create_dir_all(d.0.join("outside")).unwrap();
        std::fs::write(d.0.join("outside/config"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.0.join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("sub/up")).unwrap();
        // Ironic's master grub.cfg sources `<tftp_root>/$net_default_mac.conf` by its absolute
        // path on the conductor: a `tftpboot` → `.` link in the root serves it (README, "Ironic,
        // Metal3, Bifrost"), as tftpd-hpa's remap file does in Ironic's install guide.
        std::os::unix::fs::symlink(".", root.join("tftpboot")).unwrap();
        let cache = FileCache::new(&root, LoaderSearch::default());

        for path in [
            "ironic/pxelinux.cfg/01-52-54-00-18-01-01",
            "/tftpboot/ironic/pxelinux.cfg/01-52-54-00-18-01-01",
        ] {
            assert_eq!(
                &*block_on(cache.open(&name(path))).unwrap(),
                b"config",
                "{path}"
            );
        }
        let code = |n: &str| block_on(cache.open(&name(n))).unwrap_err().error_code();
        assert_eq!(code("escape/config"), ErrorCode::AccessViolation);
        assert_eq!(code("sub/up/config"), ErrorCode::AccessViolation);
    }

    #[test]
    fn one_copy_of_a_tftp_file_is_shared_until_the_file_changes() {
        let d = dir("cache");
        let root = d.0.join("root");
        std::fs::write(root.join("a.efi"), b"version 1").unwrap();
        let cache = FileCache::new(&root, LoaderSearch::default());
        let first = block_on(cache.open(&name("a.efi"))).unwrap();
        let again = block_on(cache.open(&name("/a.efi"))).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a second copy was read");

        // Replaced by rename (a new inode), as installers do.
        std::fs::write(root.join("a.efi.new"), b"version 2").unwrap();
        std::fs::rename(root.join("a.efi.new"), root.join("a.efi")).unwrap();
        assert_eq!(
            &*block_on(cache.open(&name("a.efi"))).unwrap(),
            b"version 2"
        );
        // Rewritten in place (same inode).
        std::fs::write(root.join("a.efi"), b"version three").unwrap();
        assert_eq!(
            &*block_on(cache.open(&name("a.efi"))).unwrap(),
            b"version three"
        );
        assert_eq!(cache.len(), 1);
        // Transfers still holding the old copy keep it intact.
        assert_eq!(&*first, b"version 1");
    }

    #[test]
    fn the_tftp_cache_is_bounded_by_evicting_idle_files() {
        let d = dir("bound");
        let root = d.0.join("root");
        let cache = FileCache::new(&root, LoaderSearch::default());
        let held = {
            std::fs::write(root.join("held"), b"x").unwrap();
            block_on(cache.open(&name("held"))).unwrap()
        };
        for i in 0..MAX_CACHED_FILES + 10 {
            let file = format!("f{i}");
            std::fs::write(root.join(&file), b"y").unwrap();
            block_on(cache.open(&name(&file))).unwrap();
        }
        assert_eq!(cache.len(), MAX_CACHED_FILES);
        // The file a transfer holds was not evicted: it is served without a second read.
        let again = block_on(cache.open(&name("held"))).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn known_loaders_missing_from_the_root_come_from_the_ipxe_package_and_nothing_else_does() {
        let d = dir("search");
        let root = d.0.join("root");
        let package = d.0.join("package");
        std::fs::create_dir_all(&package).unwrap();
        std::fs::write(package.join("undionly.kpxe"), b"package kpxe").unwrap();
        std::fs::write(package.join("ipxe.efi"), b"debian 12 efi").unwrap();
        std::fs::write(package.join("ipxe.lkrn"), b"not served").unwrap();
        std::fs::write(root.join("undionly.kpxe"), b"operator kpxe").unwrap();
        let cache = FileCache::new(&root, LoaderSearch::new(vec![package]));
        // The operator's copy wins; the package fills in what the root lacks, by either name.
        assert_eq!(
            &*block_on(cache.open(&name("undionly.kpxe"))).unwrap(),
            b"operator kpxe"
        );
        assert_eq!(
            &*block_on(cache.open(&name("ipxe-amd64.efi"))).unwrap(),
            b"debian 12 efi"
        );
        assert!(matches!(
            block_on(cache.open(&name("ipxe.lkrn"))),
            Err(FileError::NotFound)
        ));
        assert!(matches!(
            block_on(cache.open(&name("ipxe-arm64.efi"))),
            Err(FileError::NotFound)
        ));
    }
}
