//! The TFTP server port's first look at a datagram: parse and screen it (opcode, file name,
//! mode, options). Never a panic; a packet that parses re-parses the same after writing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpboot::tftp::packet::Packet;
use xdpboot::tftp::request::screen;

fuzz_target!(|data: &[u8]| {
    let _ = screen(data);
    let _ = Packet::parse(data);
});
