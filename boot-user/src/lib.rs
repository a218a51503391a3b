//! xdpboot: a proxyDHCP and network-boot server.
//!
//! The library holds everything the `xdpboot` binary runs, so integration tests, fuzz targets and
//! benchmarks can drive the same code: the sans-IO DHCP cores in [`dhcp`] and [`dhcp6`] (one
//! policy table for both), the configuration in
//! [`config`], the backends, the interface table and what they share ([`net::service`]) in [`net`], the
//! read-only TFTP server for first-stage loaders in [`tftp`] (found in its root or, by
//! [`loaders`], in the `ipxe` package), and the HTTP(S) server for scripts, kernels and images
//! in [`http`]. What they do is observed in [`observe`] (metrics in
//! [`metrics`], the node table in [`nodes`]) and shown on the admin listener in [`admin`].

pub mod admin;
pub mod bootapi;
pub mod config;
pub mod dhcp;
pub mod dhcp6;
pub mod events;
pub mod http;
pub mod loaders;
pub mod log_budget;
pub mod metrics;
pub mod net;
pub mod nodes;
pub mod observe;
pub mod reload;
pub mod template;
pub mod tftp;
