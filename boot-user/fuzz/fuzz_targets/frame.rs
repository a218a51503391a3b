//! The AF_XDP backend's frame parser (Ethernet, VLAN tags, IPv4, UDP): never a panic, and a
//! parsed payload lies inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpboot::net::frame::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = parse(data) {
        let start = frame.payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + frame.payload.len() <= data.len());
    }
});
