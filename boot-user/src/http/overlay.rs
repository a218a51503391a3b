//! Per-node overlays: a small newc cpio archive of the node's own files (identity, join token,
//! config), which the kernel unpacks after the shared initrd, so a whole rack shares one big
//! initrd and each node adds a few hundred bytes.
//!
//! Overlays are generated, never stored per node. Rendering a node's files is cheap; building
//! the archive is done only when the rendered files change: the cache keeps each node's
//! archive under the SHA-256 of its inputs and swaps in a new one atomically (an `Arc`
//! replaced under a lock), so no client ever sees a half-built overlay, and a boot storm of
//! one rack costs one build per node, not one per request (Warewulf's "thundering herd").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

pub use crate::config::OverlayFile;
use crate::template::{RenderError, Vars};

/// newc's magic (the "new ASCII" format of `cpio -H newc`, what the kernel's initramfs
/// unpacker reads: Documentation/driver-api/early-userspace/buffer-format.rst).
const NEWC_MAGIC: &[u8; 6] = b"070701";
const NEWC_HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// Largest overlay: overlays are identity and config, not payload; the bound keeps a bad
/// template from filling memory per node.
pub const MAX_OVERLAY_LEN: usize = 16 << 20;
/// Nodes whose overlays are cached; beyond this the cache starts over (a rack is hundreds).
pub const MAX_CACHED_NODES: usize = 100_000;

/// A file or directory of a cpio archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    #[error("rendering {path}: {source}")]
    Render { path: String, source: RenderError },
    #[error("the overlay would exceed {MAX_OVERLAY_LEN} bytes")]
    TooLarge,
}

/// A built overlay: the archive and its strong validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub bytes: Arc<[u8]>,
    /// Hex SHA-256 of the inputs; the HTTP ETag.
    pub hash: String,
}

/// The overlays of all nodes, each rebuilt only when its inputs change.
#[derive(Debug, Default)]
pub struct OverlayCache {
    nodes: Mutex<HashMap<String, Arc<Overlay>>>,
    builds: std::sync::atomic::AtomicU64,
}

impl OverlayCache {
    /// The overlay of node `key` (its MAC) for `files` rendered with `vars`.
    pub fn get(
        &self,
        key: &str,
        files: &[OverlayFile],
        vars: &Vars,
    ) -> Result<Arc<Overlay>, OverlayError> {
        let mut rendered = Vec::with_capacity(files.len());
        let mut hasher = digest::Context::new(&digest::SHA256);
        let mut total = 0usize;
        for file in files {
            let data = file
                .content
                .render(vars)
                .map_err(|source| OverlayError::Render {
                    path: file.path.clone(),
                    source,
                })?;
            total += data.len() + file.path.len() + NEWC_HEADER_LEN;
            if total > MAX_OVERLAY_LEN {
                return Err(OverlayError::TooLarge);
            }
            // Length-prefixed fields, so ("ab","c") and ("a","bc") hash differently.
            for field in [
                file.path.as_bytes(),
                &file.mode.to_le_bytes(),
                data.as_bytes(),
            ] {
                hasher.update(&(field.len() as u64).to_le_bytes());
                hasher.update(field);
            }
            rendered.push((file, data));
        }
        let hash = hex(hasher.finish().as_ref());
        if let Some(cached) = self.lock().get(key)
            && cached.hash == hash
        {
            return Ok(cached.clone());
        }
        let entries = with_parent_dirs(
            rendered
                .into_iter()
                .map(|(file, data)| Entry::File {
                    path: file.path.clone(),
                    mode: file.mode,
                    data: data.into_bytes(),
                })
                .collect(),
        );
        let overlay = Arc::new(Overlay {
            bytes: newc(&entries).into(),
            hash,
        });
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nodes = self.lock();
        if nodes.len() >= MAX_CACHED_NODES && !nodes.contains_key(key) {
            nodes.clear();
        }
        nodes.insert(key.to_owned(), overlay.clone());
        Ok(overlay)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Overlay>>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many archives were built (for tests and metrics: a storm must not rebuild).
    pub fn builds(&self) -> u64 {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Adds the directories leading to each file (`etc/` for `etc/hostname`), once each, before
/// the files: the kernel's unpacker does not create missing parents.
pub fn with_parent_dirs(files: Vec<Entry>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for entry in files {
        let path = match &entry {
            Entry::File { path, .. } | Entry::Dir { path, .. } => path.clone(),
        };
        let mut prefix = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                out.push(Entry::Dir {
                    path: prefix.clone(),
                    mode: 0o755,
                });
            }
        }
        out.push(entry);
    }
    out
}

/// Writes a newc archive. Timestamps and owners are fixed (0, root), so equal inputs give
/// equal bytes and a stable ETag.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        let (path, mode, data): (&str, u32, &[u8]) = match entry {
            Entry::Dir { path, mode } => (path, 0o040000 | (mode & 0o7777), &[]),
            Entry::File { path, mode, data } => (path, 0o100000 | (mode & 0o7777), data),
        };
        let nlink = if matches!(entry, Entry::Dir { .. }) {
            2
        } else {
            1
        };
        // Inode numbers start at 1: the kernel links entries with equal inode and nlink > 1.
        push_member(&mut out, ino as u32 + 1, mode, nlink, path, data);
    }
    push_member(&mut out, 0, 0, 1, TRAILER, &[]);
    out
}

fn push_member(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    out.extend_from_slice(NEWC_MAGIC);
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
    // namesize (with the NUL), check: thirteen 8-digit hex fields.
    for field in [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ] {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn file(path: &str, content: &str) -> OverlayFile {
        OverlayFile {
            path: path.into(),
            mode: 0o644,
            content: Template::parse(content, &["hostname", "mac"]).unwrap(),
        }
    }

    fn vars(hostname: &str) -> Vars {
        let mut v = Vars::new();
        v.insert("hostname".into(), hostname.into());
        v.insert("mac".into(), "52:54:00:00:00:01".into());
        v
    }

    #[test]
    fn archives_are_4_byte_aligned_and_end_with_the_trailer() {
        let bytes = newc(&with_parent_dirs(vec![Entry::File {
            path: "etc/hostname".into(),
            mode: 0o644,
            data: b"n01\n".to_vec(),
        }]));
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let trailer = bytes
            .windows(TRAILER.len())
            .position(|w| w == TRAILER.as_bytes())
            .unwrap();
        assert!(trailer > 0);
        // The directory comes first.
        assert_eq!(&bytes[NEWC_HEADER_LEN..NEWC_HEADER_LEN + 3], b"etc");
    }

    #[test]
    fn unchanged_inputs_reuse_the_archive_and_changed_ones_replace_it() {
        let cache = OverlayCache::default();
        let files = [file("etc/hostname", "{{hostname}}\n")];
        let a = cache.get("m1", &files, &vars("n01")).unwrap();
        let b = cache.get("m1", &files, &vars("n01")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.builds(), 1);
        let c = cache.get("m1", &files, &vars("n02")).unwrap();
        assert_ne!(a.hash, c.hash);
        assert_eq!(cache.builds(), 2);
        // The old archive stays intact for whoever still holds it.
        assert!(a.bytes.windows(4).any(|w| w == b"n01\n"));
    }

    #[test]
    fn equal_inputs_give_equal_bytes() {
        let files = [file("a/b/c", "{{mac}}")];
        let x = OverlayCache::default()
            .get("k", &files, &vars("h"))
            .unwrap();
        let y = OverlayCache::default()
            .get("k", &files, &vars("h"))
            .unwrap();
        assert_eq!(x, y);
    }
}
