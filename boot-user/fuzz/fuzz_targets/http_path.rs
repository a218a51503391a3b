//! HTTP path resolution: decode once, refuse traversal. Whatever it accepts is a relative path
//! without `..`, NUL or backslash, so joining it to a root cannot leave the root lexically.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use xdpboot::http::files::decode_request_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = decode_request_path(text) {
        for component in path.components() {
            assert!(
                matches!(component, Component::Normal(_) | Component::CurDir),
                "{text:?} decoded to {path:?}"
            );
        }
        let bytes = path.as_os_str().as_encoded_bytes();
        assert!(!bytes.contains(&0) && !bytes.contains(&b'\\'), "{text:?}");
    }
});
