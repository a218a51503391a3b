//! Static roots: loaders, kernels, initrds and images served as files.
//!
//! A request path is percent-decoded once, refused if any segment is `..` or it holds a NUL or
//! a backslash, then canonicalized and required to stay inside the canonical root (so neither
//! encoded traversal nor a symlink pointing out of the root escapes it). Every refusal is a
//! plain 404: the response never tells a prober which rule it hit.
//!
//! Symlinks inside the root are followed, of files and of directories alike, as long as where
//! they lead is inside the root too: OpenStack Ironic's HTTP root is made of them
//! (`pxelinux.cfg/<mac>` → `../<node-uuid>/config`), and a site may link a versioned directory
//! in (`ironic` → `ironic-39`). The check is on the canonical path, so a symlink (or a chain of
//! them) that leaves the root is refused wherever it sits, and empty segments (`//`, as
//! Bifrost's `http_url` ending in `/` produces) are ignored.
//!
//! Open files are cached by path and checked against the file's identity (device, inode,
//! mtime, length) on every request. Each cached file is also mapped (`mmap`) once: plain
//! connections hand slices of that map to hyper, and the connection stream turns them back
//! into `sendfile(2)` calls (see `stream.rs`), so every client shares the page cache and none
//! holds a copy of the image. Replace files by rename: a download in progress keeps the file
//! it opened, and the next request sees the new one (a new inode).
//!
//! Ranges and conditional requests follow RFC 9110 (sections cited where each rule applies).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use memmap2::Mmap;

use super::Body;
use crate::loaders::LoaderSearch;

/// Open files kept for reuse. Past this many, unused entries are dropped; if all are in use,
/// new files are served uncached.
pub const MAX_CACHED_FILES: usize = 1024;

/// Why a request path does not name a servable file. Each becomes a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("path has a .. segment")]
    DotDot,
    #[error("path has a NUL or a backslash")]
    BadByte,
    #[error("path leaves the root")]
    OutsideRoot,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
}

/// A file opened for serving, shared by every request for it while it is unchanged.
pub struct OpenFile {
    file: File,
    /// The whole file mapped read-only; `None` for an empty file. Plain connections send
    /// slices of it with `sendfile(2)`: the process itself never reads these pages.
    map: Option<Mmap>,
    identity: Identity,
    etag: HeaderValue,
    last_modified: HeaderValue,
    /// Second-resolution modification time, as Last-Modified carries it.
    modified: SystemTime,
    content_type: HeaderValue,
    registry: Arc<MapRegistry>,
}

/// What makes two opens of a path the same content: a file replaced by rename has a new
/// inode; one rewritten in place a new mtime (and usually length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

impl Identity {
    fn of(meta: &Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        }
    }
}

impl OpenFile {
    pub fn len(&self) -> u64 {
        self.identity.len
    }

    pub fn is_empty(&self) -> bool {
        self.identity.len == 0
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The mapped bytes, for [`MapRegistry`] and the body's slices.
    pub(crate) fn mapped(&self) -> Option<&[u8]> {
        self.map.as_deref()
    }

    /// `range` of the file as one `Bytes` that references the shared map (no copy).
    pub(crate) fn mapped_slice(self: &Arc<Self>, start: u64, end: u64) -> Option<Bytes> {
        let map = self.map.as_ref()?;
        let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
        if start >= end || end > map.len() {
            return None;
        }
        Some(Bytes::from_owner(MapSlice {
            file: self.clone(),
            start,
            end,
        }))
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some(map) = &self.map {
            self.registry.remove(map);
        }
    }
}

/// A `Bytes` owner: part of a file's map, keeping the file (and so the map) alive.
struct MapSlice {
    file: Arc<OpenFile>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        let map = self.file.map.as_deref().unwrap_or_default();
        map.get(self.start..self.end).unwrap_or_default()
    }
}

/// A static root and its cache of open files.
pub struct StaticRoot {
    root: PathBuf,
    /// Where known loaders missing from the root are found (the `ipxe` package).
    loaders: LoaderSearch,
    cache: Mutex<HashMap<PathBuf, Arc<OpenFile>>>,
    registry: Arc<MapRegistry>,
}

impl StaticRoot {
    pub fn new(root: &Path, registry: Arc<MapRegistry>) -> StaticRoot {
        StaticRoot {
            root: root.to_path_buf(),
            loaders: LoaderSearch::default(),
            cache: Mutex::new(HashMap::new()),
            registry,
        }
    }

    /// Serves known loaders missing from the root from `loaders` (UEFI HTTP boot fetches
    /// `ipxe-amd64.efi` by URL).
    pub fn set_loaders(&mut self, loaders: LoaderSearch) {
        self.loaders = loaders;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The canonical path a request path names inside the root.
    pub fn resolve(&self, request_path: &str) -> Result<PathBuf, Refusal> {
        let relative = decode_request_path(request_path)?;
        // The root is canonicalized per request, so a root created or re-pointed (a symlink
        // flipped to a new release) after start is followed.
        let found = self
            .root
            .canonicalize()
            .and_then(|root| Ok((root.join(&relative).canonicalize()?, root)));
        let (canonical, root) = match found {
            Ok(found) => found,
            Err(_) => {
                return self
                    .loaders
                    .find_relative(&relative)
                    .ok_or(Refusal::NotFound);
            }
        };
        if !canonical.starts_with(&root) {
            return Err(Refusal::OutsideRoot);
        }
        Ok(canonical)
    }

    /// Opens (or reuses) the file a request path names.
    pub fn open(&self, request_path: &str) -> Result<Arc<OpenFile>, Refusal> {
        let path = self.resolve(request_path)?;
        self.open_path(&path)
    }

    /// Opens (or reuses) a file the operator named in the config (the kernel and initrds of
    /// `[boot]`), wherever it is: trusted, so not confined to the root; still regular files
    /// only, and still one shared map per file.
    pub fn open_path(&self, path: &Path) -> Result<Arc<OpenFile>, Refusal> {
        let path = path.canonicalize().map_err(|_| Refusal::NotFound)?;
        let meta = std::fs::metadata(&path).map_err(|_| Refusal::NotFound)?;
        if !meta.is_file() {
            return Err(Refusal::NotAFile);
        }
        let identity = Identity::of(&meta);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = cache.get(&path)
            && open.identity == identity
        {
            return Ok(open.clone());
        }
        // Opened without holding the lock would let two requests map the same new file;
        // opening is a few syscalls, so keep it simple and hold it.
        let open = Arc::new(self.open_file(&path)?);
        self.registry.bind(&open);
        if cache.len() >= MAX_CACHED_FILES {
            cache.retain(|_, f| Arc::strong_count(f) > 1);
        }
        if cache.len() < MAX_CACHED_FILES {
            cache.insert(path, open.clone());
        }
        Ok(open)
    }

    fn open_file(&self, path: &Path) -> Result<OpenFile, Refusal> {
        // O_NOFOLLOW: the path was just canonicalized; a symlink appearing in its place since
        // then is refused rather than followed out of the root.
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|_| Refusal::NotFound)?;
        // Identity from the open file itself: what is served is what was checked.
        let meta = file.metadata().map_err(|_| Refusal::NotFound)?;
        if !meta.is_file() {
            return Err(Refusal::NotAFile);
        }
        let identity = Identity::of(&meta);
        let map = if identity.len == 0 {
            None
        } else {
            // SAFETY: the map is read only by the kernel: plain connections pass slices of it
            // to `sendfile` by address (stream.rs) and TLS connections `pread` the file
            // instead. A file truncated under the map therefore shortens a transfer (sendfile
            // returns early, or a fallback write() fails with EFAULT) but never faults this
            // process. Operators replace files by rename, which leaves this map untouched.
            Some(unsafe { Mmap::map(&file) }.map_err(|_| Refusal::NotFound)?)
        };
        let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0));
        Ok(OpenFile {
            file,
            map,
            etag: etag(&identity),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(mtime))
                .expect("an HTTP date is a valid header value"),
            modified: mtime,
            content_type: HeaderValue::from_static(content_type(path)),
            identity,
            registry: self.registry.clone(),
        })
    }

    /// The response to a GET or HEAD of `request_path`; `delivery` says how the body may be
    /// sent on this connection.
    pub fn respond(
        &self,
        method: &Method,
        request_path: &str,
        headers: &HeaderMap,
        delivery: Delivery,
    ) -> Result<Response<Body>, Refusal> {
        let file = self.open(request_path)?;
        Ok(respond_open(method, &file, headers, delivery, 1))
    }
}

/// The response to a GET or HEAD of an open file, its length rounded up to a multiple of
/// `align` with zero bytes.
///
/// Initrds are served with `align` 4: the kernel's EFI stub lays initrds back to back, and
/// the unpacker looks for the next archive at a 4-byte boundary, so an uncompressed cpio after
/// a gzip whose length is not a multiple of 4 is silently lost (DESIGN.md, "Test lab facts").
/// Zeros after a compressed archive are harmless. The padded bytes are part of the
/// representation: Content-Length, ranges and the ETag all count them.
pub fn respond_open(
    method: &Method,
    file: &Arc<OpenFile>,
    headers: &HeaderMap,
    delivery: Delivery,
    align: u64,
) -> Response<Body> {
    let stored = file.len();
    let len = stored.next_multiple_of(align.max(1));
    let etag = if len == stored {
        file.etag.clone()
    } else {
        // A different representation of the same file: a different strong validator.
        let text = file.etag.to_str().unwrap_or("\"x\"").trim_end_matches('"');
        HeaderValue::from_str(&format!("{text}-a{align}\"")).unwrap_or_else(|_| file.etag.clone())
    };
    let mut response = Response::builder()
        .header(header::ETAG, etag.clone())
        .header(header::LAST_MODIFIED, file.last_modified.clone())
        .header(header::ACCEPT_RANGES, "bytes");
    let range = match evaluate_preconditions(method, headers, &etag, file.modified) {
        Precondition::NotModified => {
            return response
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("static headers are valid");
        }
        Precondition::Failed => {
            return response
                .status(StatusCode::PRECONDITION_FAILED)
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .expect("static headers are valid");
        }
        // RFC 9110 §14.2: GET is the only method for which range handling is defined; a
        // Range on HEAD (or on a conditional request whose If-Range fails) is ignored.
        Precondition::Proceed { honour_range } if honour_range && method == Method::GET => {
            match headers
                .get(header::RANGE)
                .map(|v| parse_range(v.as_bytes(), len))
            {
                Some(RangeRequest::Satisfiable(range)) => Some(range),
                Some(RangeRequest::Unsatisfiable) => {
                    // RFC 9110 §15.5.17: 416 with Content-Range "bytes */<length>".
                    return response
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                        .header(header::CONTENT_LENGTH, 0)
                        .body(Body::empty())
                        .expect("formatted headers are valid");
                }
                // §14.2: a server MAY ignore a Range it cannot parse or, as here, one
                // asking for several ranges.
                Some(RangeRequest::Ignored) | None => None,
            }
        }
        Precondition::Proceed { .. } => None,
    };
    let (status, start, end) = match range {
        Some(r) => {
            // §14.4: Content-Range "bytes first-last/complete-length".
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{len}", r.start, r.end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, r.start, r.end)
        }
        None => (StatusCode::OK, 0, len),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        // The stored bytes of the range, then the padding zeros it covers.
        Body::file(file.clone(), start.min(stored), end.min(stored), delivery)
            .with_padding(end - start.max(stored).min(end))
    };
    response
        .status(status)
        .header(header::CONTENT_TYPE, file.content_type.clone())
        .header(header::CONTENT_LENGTH, end - start)
        .body(body)
        .expect("formatted headers are valid")
}

/// How a connection can carry a file body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Slices of the shared map, sent by the kernel with `sendfile` (plain TCP).
    Mapped,
    /// Bounded `pread` chunks (TLS, where the bytes must pass through the encryption).
    Read,
}

/// The relative path a request path names: percent-decoded exactly once (so `%252e` stays the
/// literal `%2e`), empty and `.` segments dropped, `..` segments, NUL and backslash refused.
pub fn decode_request_path(request_path: &str) -> Result<PathBuf, Refusal> {
    let Some(rest) = request_path.strip_prefix('/') else {
        return Err(Refusal::NotAbsolute);
    };
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
    if decoded.iter().any(|&b| b == 0 || b == b'\\') {
        return Err(Refusal::BadByte);
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot),
            name => relative.push(OsStr::from_bytes(name)),
        }
    }
    Ok(relative)
}

/// A strong validator from the file's identity (RFC 9110 §8.8.3): any change of inode, mtime
/// or length changes it. Strong, so If-Range can use it (§13.1.5 compares strongly).
fn etag(id: &Identity) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "\"{:x}-{:x}-{:x}\"",
        id.ino, id.mtime_ns as u128, id.len
    ))
    .expect("hex digits and quotes are a valid header value")
}

/// Content types for what a boot server holds; anything else is a byte stream.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(OsStr::to_str) {
        Some("ipxe" | "txt" | "cfg" | "conf") => "text/plain; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("iso") => "application/x-iso9660-image",
        Some("pem" | "crt") => "application/x-pem-file",
        _ => "application/octet-stream",
    }
}

/// The outcome of a request's preconditions (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// 304: the client's copy is current.
    NotModified,
    /// 412: an If-Match or If-Unmodified-Since failed.
    Failed,
    /// Serve the resource; `honour_range` is false when If-Range did not match.
    Proceed { honour_range: bool },
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since and If-Range in
/// the order of RFC 9110 §13.2.2.
pub fn evaluate_preconditions(
    method: &Method,
    headers: &HeaderMap,
    etag: &HeaderValue,
    modified: SystemTime,
) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    // Step 1: If-Match, strong comparison (§13.1.1).
    if let Some(value) = headers.get(header::IF_MATCH) {
        if !etag_list_matches(value.as_bytes(), etag.as_bytes(), Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(headers, &header::IF_UNMODIFIED_SINCE) {
        // Step 2: If-Unmodified-Since only without If-Match (§13.1.4).
        if modified > since {
            return Precondition::Failed;
        }
    }
    // Step 3: If-None-Match, weak comparison (§13.1.2): 304 for GET and HEAD.
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        if etag_list_matches(value.as_bytes(), etag.as_bytes(), Comparison::Weak) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head && let Some(since) = header_date(headers, &header::IF_MODIFIED_SINCE) {
        // Step 4: If-Modified-Since only without If-None-Match, only for GET and HEAD
        // (§13.1.3).
        if modified <= since {
            return Precondition::NotModified;
        }
    }
    // Step 5: If-Range (§13.1.5) decides whether Range applies: an entity tag must match
    // strongly; a date must equal Last-Modified exactly.
    let honour_range = match headers.get(header::IF_RANGE) {
        None => true,
        Some(value) => {
            let value = value.as_bytes();
            if value.starts_with(b"\"") {
                value == etag.as_bytes()
            } else if value.starts_with(b"W/") {
                false
            } else {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| httpdate::parse_http_date(v).ok())
                    .is_some_and(|date| date == modified)
            }
        }
    };
    Precondition::Proceed { honour_range }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// Whether an If-Match / If-None-Match list (`*` or comma-separated entity tags) names `etag`.
fn etag_list_matches(list: &[u8], etag: &[u8], comparison: Comparison) -> bool {
    let list = list.trim_ascii();
    if list == b"*" {
        return true;
    }
    list.split(|&b| b == b',').any(|candidate| {
        let candidate = candidate.trim_ascii();
        match (candidate.strip_prefix(b"W/"), comparison) {
            // §8.8.3.2: a weak tag never matches strongly.
            (Some(_), Comparison::Strong) => false,
            (Some(opaque), Comparison::Weak) => opaque == etag,
            (None, _) => candidate == etag,
        }
    })
}

fn header_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// A byte range, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    Satisfiable(ByteRange),
    /// 416: a valid single range that starts past the end (or a zero-length suffix).
    Unsatisfiable,
    /// Not a single valid byte range: serve the whole representation.
    Ignored,
}

/// Parses a Range header for a representation of `len` bytes (RFC 9110 §14.1.2):
/// `bytes=first-last`, `bytes=first-` or `bytes=-suffix`, one range only.
pub fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    let Ok(value) = std::str::from_utf8(value) else {
        return RangeRequest::Ignored;
    };
    // The range unit is case-insensitive (§14.1).
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeRequest::Ignored;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            // §14.1.3: a suffix range of zero length is unsatisfiable; a longer suffix than
            // the representation selects all of it.
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Satisfiable(ByteRange {
                start: len - n.min(len),
                end: len,
            }),
            None => RangeRequest::Ignored,
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return RangeRequest::Ignored;
            };
            let end = match last {
                "" => len,
                last => match number(last) {
                    // §14.1.1: last < first makes the range invalid: ignore it.
                    Some(last) if last < start => return RangeRequest::Ignored,
                    // A last past the end is clamped to the end.
                    Some(last) => last.saturating_add(1).min(len),
                    None => return RangeRequest::Ignored,
                },
            };
            // §14.1.1: satisfiable only if first is below the length.
            if start >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable(ByteRange { start, end })
            }
        }
    }
}

/// The address ranges of the mapped files, so a slice handed to the stream can be traced back
/// to its file and offset.
#[derive(Default)]
pub struct MapRegistry {
    /// Map start address → the file (weak: the registry never keeps a file open).
    maps: RwLock<BTreeMap<usize, Weak<OpenFile>>>,
    /// Bytes sent with `sendfile` so far: how tests and benchmarks see the zero-copy path work.
    pub(super) sent: AtomicU64,
}

impl MapRegistry {
    /// Registers `file`'s map (called once the file is in its `Arc`).
    pub(crate) fn bind(&self, file: &Arc<OpenFile>) {
        if let Some(map) = file.mapped() {
            self.maps
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(map.as_ptr() as usize, Arc::downgrade(file));
        }
    }

    pub(crate) fn remove(&self, map: &[u8]) {
        self.maps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(map.as_ptr() as usize));
    }

    /// Bytes sent with `sendfile` since start.
    pub fn sendfile_bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The file and offset a slice lies in, if it lies wholly inside one registered map.
    pub(super) fn find(&self, slice: &[u8]) -> Option<(Arc<OpenFile>, u64)> {
        let start = slice.as_ptr() as usize;
        // The lock is released before `file` can be dropped: dropping the last reference runs
        // OpenFile's destructor, which takes the write lock.
        let (base, file) = {
            let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
            let (&base, file) = maps.range(..=start).next_back()?;
            (base, file.upgrade()?)
        };
        let len = file.mapped()?.len();
        (start + slice.len() <= base + len).then_some((file, (start - base) as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn decoded_paths_are_plain_relative_paths(path in "/[a-z.%/\\\\0-9A-F]{0,48}") {
            if let Ok(relative) = decode_request_path(&path) {
                prop_assert!(relative.components().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }

    fn sat(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Satisfiable(ByteRange { start, end })
    }

    #[test]
    fn single_byte_ranges_follow_rfc_9110() {
        assert_eq!(parse_range(b"bytes=0-499", 10_000), sat(0, 500));
        assert_eq!(parse_range(b"bytes=500-", 10_000), sat(500, 10_000));
        assert_eq!(parse_range(b"bytes=-500", 10_000), sat(9_500, 10_000));
        assert_eq!(parse_range(b"bytes=-50000", 10_000), sat(0, 10_000));
        assert_eq!(parse_range(b"bytes=9000-99999", 10_000), sat(9_000, 10_000));
        assert_eq!(parse_range(b"Bytes = 1-1", 10), sat(1, 2));
        assert_eq!(
            parse_range(b"bytes=10000-", 10_000),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(b"bytes=-0", 10_000),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(b"bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-5", 0), RangeRequest::Unsatisfiable);
        for ignored in [
            &b"bytes=5-1"[..],
            b"bytes=0-1,3-4",
            b"items=0-1",
            b"bytes=a-b",
            b"bytes=+1-2",
            b"bytes=-",
            b"bytes",
            b"bytes=18446744073709551616-",
            b"\xff",
        ] {
            assert_eq!(
                parse_range(ignored, 100),
                RangeRequest::Ignored,
                "{ignored:?}"
            );
        }
    }

    #[test]
    fn request_paths_are_decoded_once_and_never_climb() {
        assert_eq!(
            decode_request_path("/a/b.img").unwrap(),
            Path::new("a/b.img")
        );
        assert_eq!(decode_request_path("//a/./b").unwrap(), Path::new("a/b"));
        assert_eq!(decode_request_path("/a%20b").unwrap(), Path::new("a b"));
        assert_eq!(
            decode_request_path("/%252e%252e/x").unwrap(),
            Path::new("%2e%2e/x")
        );
        for (path, why) in [
            ("/../etc/passwd", Refusal::DotDot),
            ("/%2e%2e/etc/passwd", Refusal::DotDot),
            ("/a/..%2f..%2fetc", Refusal::DotDot),
            ("/a/%2E%2E", Refusal::DotDot),
            ("/a%00b", Refusal::BadByte),
            ("/a%5c..%5cb", Refusal::BadByte),
            ("a", Refusal::NotAbsolute),
            ("*", Refusal::NotAbsolute),
        ] {
            assert_eq!(decode_request_path(path), Err(why), "{path}");
        }
    }

    /// A scratch root, removed on drop.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Ironic's layout, as its `ipxe` boot interface writes it, under `root/ironic-39`, with
    /// `root/ironic` a symlink to that directory; and symlinks that leave the root.
    fn ironic_root(tag: &str) -> (Dir, StaticRoot) {
        let dir = std::env::temp_dir().join(format!("xdpboot-http-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let ironic = root.join("ironic-39");
        std::fs::create_dir_all(ironic.join("1be26c0b/")).unwrap();
        std::fs::create_dir_all(ironic.join("pxelinux.cfg")).unwrap();
        std::fs::write(ironic.join("boot.ipxe"), b"#!ipxe\n").unwrap();
        std::fs::write(ironic.join("1be26c0b/config"), b"#!ipxe\n").unwrap();
        std::os::unix::fs::symlink(
            "../1be26c0b/config",
            ironic.join("pxelinux.cfg/52-54-00-18-01-01"),
        )
        .unwrap();
        std::os::unix::fs::symlink("ironic-39", root.join("ironic")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../outside", ironic.join("up")).unwrap();
        std::os::unix::fs::symlink("../up/secret", ironic.join("pxelinux.cfg/chained")).unwrap();
        let files = StaticRoot::new(&root, Arc::new(MapRegistry::default()));
        (Dir(dir), files)
    }

    #[test]
    fn a_symlinked_directory_inside_the_root_is_followed() {
        let (_dir, files) = ironic_root("symlinked-dir");
        for path in [
            "/ironic/boot.ipxe",
            "/ironic/pxelinux.cfg/52-54-00-18-01-01",
            "//ironic//1be26c0b/config",
            "/ironic-39/pxelinux.cfg/52-54-00-18-01-01",
        ] {
            let open = files.open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(open.len(), 7, "{path}");
        }
    }

    #[test]
    fn a_symlink_whose_target_leaves_the_root_is_refused_wherever_it_sits() {
        let (_dir, files) = ironic_root("escaping-symlinks");
        for path in [
            "/escape/secret",
            "/ironic/up/secret",
            "/ironic-39/up/secret",
            "/ironic/pxelinux.cfg/chained",
        ] {
            assert_eq!(
                files.open(path).map(|f| f.len()).err(),
                Some(Refusal::OutsideRoot),
                "{path}"
            );
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn preconditions_are_evaluated_in_rfc_9110_order() {
        let etag = HeaderValue::from_static("\"1-2-3\"");
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(modified);
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(60));
        let eval = |m: &Method, h: &[(header::HeaderName, &str)]| {
            evaluate_preconditions(m, &headers(h), &etag, modified)
        };
        let proceed = Precondition::Proceed { honour_range: true };
        let get = Method::GET;

        assert_eq!(eval(&get, &[]), proceed);
        assert_eq!(
            eval(&get, &[(header::IF_NONE_MATCH, "\"x\", W/\"1-2-3\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&Method::HEAD, &[(header::IF_NONE_MATCH, "*")]),
            Precondition::NotModified
        );
        assert_eq!(eval(&get, &[(header::IF_NONE_MATCH, "\"other\"")]), proceed);
        assert_eq!(
            eval(&get, &[(header::IF_MODIFIED_SINCE, &date)]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&get, &[(header::IF_MODIFIED_SINCE, &earlier)]),
            proceed
        );
        // If-None-Match wins over If-Modified-Since (§13.2.2 step 4 applies only without it).
        assert_eq!(
            eval(
                &get,
                &[
                    (header::IF_NONE_MATCH, "\"other\""),
                    (header::IF_MODIFIED_SINCE, &date)
                ]
            ),
            proceed
        );
        assert_eq!(
            eval(&get, &[(header::IF_MATCH, "W/\"1-2-3\"")]),
            Precondition::Failed
        );
        assert_eq!(eval(&get, &[(header::IF_MATCH, "\"1-2-3\"")]), proceed);
        assert_eq!(
            eval(&get, &[(header::IF_UNMODIFIED_SINCE, &earlier)]),
            Precondition::Failed
        );
        assert_eq!(
            eval(&get, &[(header::IF_RANGE, "\"1-2-3\"")]),
            Precondition::Proceed { honour_range: true }
        );
        assert_eq!(
            eval(&get, &[(header::IF_RANGE, "\"old\"")]),
            Precondition::Proceed {
                honour_range: false
            }
        );
        assert_eq!(
            eval(&get, &[(header::IF_RANGE, &date)]),
            Precondition::Proceed { honour_range: true }
        );
        assert_eq!(
            eval(&get, &[(header::IF_RANGE, &earlier)]),
            Precondition::Proceed {
                honour_range: false
            }
        );
    }
}
