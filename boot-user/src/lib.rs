//! xdpboot: a proxyDHCP and network-boot server.
//!
//! The library holds everything the `xdpboot` binary runs, so integration tests, fuzz targets and
//! benchmarks can drive the same code: the sans-IO DHCP core in [`dhcp`], the configuration in
//! [`config`], the backends and the interface table in [`net`], and the glue in [`service`].

pub mod config;
pub mod dhcp;
pub mod net;
pub mod service;
