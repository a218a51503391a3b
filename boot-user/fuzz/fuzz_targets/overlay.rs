//! Overlay archives from arbitrary entries: never a panic; the archive is 4-byte aligned, starts
//! with the newc magic and ends with the trailer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpboot::http::overlay::{Entry, newc, with_parent_dirs};

fuzz_target!(|data: &[u8]| {
    // Entries from the input: a path up to a NUL, then a mode byte, then data up to 0xff.
    let mut entries = Vec::new();
    for chunk in data.split(|&b| b == 0xff).take(64) {
        let (path, rest) = match chunk.iter().position(|&b| b == 0) {
            Some(i) => (&chunk[..i], &chunk[i + 1..]),
            None => (chunk, &[][..]),
        };
        let path = String::from_utf8_lossy(path).into_owned();
        let mode = u32::from(rest.first().copied().unwrap_or(0)) * 8;
        let body = rest.get(1..).unwrap_or_default().to_vec();
        entries.push(if body.is_empty() && path.ends_with('/') {
            Entry::Dir { path, mode }
        } else {
            Entry::File {
                path,
                mode,
                data: body,
            }
        });
    }
    let archive = newc(&with_parent_dirs(entries));
    assert_eq!(archive.len() % 4, 0);
    assert!(archive.starts_with(b"070701"));
    assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
});
