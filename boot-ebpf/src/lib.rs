#![no_std]
// Exists only so that boot-user can declare this crate as a build-dependency; the XDP program
// is the binary target, src/main.rs.
