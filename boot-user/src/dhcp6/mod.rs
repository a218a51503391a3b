//! The DHCPv6 proxy core, sans I/O: bytes and addresses in, a reply (or the reason for silence)
//! out. It answers only the boot part, beside the site's DHCPv6 server, which keeps addresses
//! and router advertisements: never an IA_NA, never a Solicit without PXEClient, HTTPClient
//! or iPXE. The policy table is the DHCPv4 core's ([`crate::dhcp::policy`]): one table decides
//! what a machine boots over either.
//!
//! What is answered (see [`reply`] for the bytes):
//! - on port 547, a **Solicit** from a boot client: an Advertise with the boot file URL;
//! - on port 547, an **Information-request** from a boot client (iPXE sends one when a router
//!   advertisement has the O flag and not M: iPXE `ndp.c`, `dhcpv6.c`), or a **Request** that
//!   names us as its server: a Reply;
//! - on port 4011, EDK2's PXEv6 **Request** (sent after the site server's Reply, to the host
//!   of our `tftp://` URL, with our Server Identifier: `PxeBcRequestBootService`): a Reply;
//! - any of these inside **Relay-Forward** messages: the reply inside Relay-Replies.

pub mod classify;
pub mod reply;
pub mod stats;

use std::net::{Ipv6Addr, SocketAddrV6};

use boot_common::wire::dhcpv6::message_type;

pub use classify::{Client, Malformed, ServerPort};
pub use reply::{BootUrl, Destination, Reply, ReplyKind};

use crate::dhcp::classify::{BootProtocol, ClientArch};
use crate::dhcp::policy::{self, BootAction, Policy};
use crate::dhcp::{API_RULE, Admission, Admit, LoaderIndex, UrlPorts};

/// Why `address` cannot be the host of a boot URL, if it cannot: a client must reach it from
/// anywhere on its link and a URL must hold it, so global or unique-local only; never
/// link-local (a URL has no place for the zone, RFC 6874 aside, which no firmware reads),
/// multicast, loopback, unspecified or IPv4-mapped.
pub fn url_address_problem(address: Ipv6Addr) -> Option<&'static str> {
    if address.is_unicast_link_local() {
        Some("is link-local: a boot URL needs a global or unique-local address")
    } else if address.is_multicast() {
        Some("is a multicast address")
    } else if address.is_unspecified() || address.is_loopback() {
        Some("cannot be reached from another host")
    } else if address.to_ipv4_mapped().is_some() {
        Some("is IPv4-mapped: write the IPv4 address's own config instead")
    } else {
        None
    }
}

/// Where a request came from and which of our addresses goes in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingress<'a> {
    pub port: ServerPort,
    /// The request's IP source and UDP source port.
    pub source: SocketAddrV6,
    /// Our global or unique-local address on the ingress interface: the host of the boot
    /// URL. Never link-local: a URL has no place for the scope.
    pub server: Ipv6Addr,
    /// Our Server Identifier (a DUID-LL of the ingress interface).
    pub server_duid: &'a [u8],
    /// The datagram's link-layer source, when the backend knows it (the frame's source MAC, or
    /// the kernel's neighbour entry for the source address): the client's MAC of last resort.
    pub link_mac: Option<[u8; 6]>,
}

/// Why a well-formed request gets no reply. Counted under [`Ignored::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored<'p> {
    /// No PXEClient/HTTPClient vendor class and no iPXE user class: the site's DHCPv6 server's
    /// business alone.
    NotBootRequest,
    /// Not a message a proxy answers on this port (an address request, a renewal, a server's
    /// message).
    MessageType(u8),
    /// It names another server (its Server Identifier is not ours), or is an
    /// Information-request that asks for addresses (RFC 8415 §16.12).
    OtherServer,
    /// A boot request with an architecture no policy knows (or, from a PXE or HTTP client,
    /// none at all).
    UnknownArch,
    NoRule,
    Silent {
        rule: &'p str,
    },
    LoaderMissing {
        rule: &'p str,
        file: &'p str,
    },
    ReplyFailed(reply::ReplyError),
    NotOurs,
    ApiPending,
    ApiDown,
}

impl Ignored<'_> {
    /// Every name, in [`Ignored::index`] order.
    pub const NAMES: [&'static str; 11] = [
        "not_boot_request",
        "message_type",
        "other_server",
        "unknown_arch",
        "no_rule",
        "silent",
        "loader_missing",
        "reply_failed",
        "not_ours",
        "api_pending",
        "api_down",
    ];

    pub fn index(&self) -> usize {
        match self {
            Ignored::NotBootRequest => 0,
            Ignored::MessageType(_) => 1,
            Ignored::OtherServer => 2,
            Ignored::UnknownArch => 3,
            Ignored::NoRule => 4,
            Ignored::Silent { .. } => 5,
            Ignored::LoaderMissing { .. } => 6,
            Ignored::ReplyFailed(_) => 7,
            Ignored::NotOurs => 8,
            Ignored::ApiPending => 9,
            Ignored::ApiDown => 10,
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// The result of handling one request; names are borrowed from the policy that decided.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "the reply's bytes are inline so that answering allocates nothing"
)]
pub enum Outcome<'p> {
    Malformed(Malformed),
    Ignored {
        client: Client,
        reason: Ignored<'p>,
    },
    Reply {
        client: Client,
        rule: &'p str,
        action: BootAction<'p>,
        reply: Reply,
    },
}

/// The DHCPv6 responder: the (shared) policy and the ports URLs point at.
#[derive(Debug, Clone, Copy)]
pub struct Responder<'p> {
    pub policy: &'p Policy,
    pub ports: UrlPorts,
}

impl<'p> Responder<'p> {
    pub fn new(policy: &'p Policy, ports: UrlPorts) -> Self {
        Self { policy, ports }
    }

    /// Handles one request payload (the UDP payload: a DHCPv6 or relay message).
    pub fn handle(
        &self,
        bytes: &[u8],
        ingress: &Ingress<'_>,
        loaders: &dyn LoaderIndex,
        admission: &dyn Admission,
    ) -> Outcome<'p> {
        let request =
            match classify::parse(bytes, ingress.port, *ingress.source.ip(), ingress.link_mac) {
                Ok(request) => request,
                Err(malformed) => return Outcome::Malformed(malformed),
            };
        let client = &request.client;
        let ignore = |reason| Outcome::Ignored {
            client: request.client,
            reason,
        };
        let ours = |duid: &[u8]| duid == ingress.server_duid;
        // What a proxy answers, per port; everything else (address requests, renewals,
        // confirmations, releases, servers' own messages) is the site server's.
        let expected = match (ingress.port, client.message_type) {
            (ServerPort::Dhcp, message_type::SOLICIT | message_type::INFORMATION_REQUEST) => true,
            (ServerPort::Dhcp, message_type::REQUEST) => request.server_id.is_some_and(ours),
            (ServerPort::Pxe, message_type::REQUEST | message_type::INFORMATION_REQUEST) => true,
            _ => false,
        };
        if !expected {
            return ignore(Ignored::MessageType(client.message_type));
        }
        // Never answer what is not a boot request: an RA with M set also starts EDK2's own
        // DHCPv6 session for the address (no vendor class, issue 16).
        if !client.is_boot_request() {
            return ignore(Ignored::NotBootRequest);
        }
        // RFC 8415 §16: a Solicit carries no Server Identifier; other messages that name one
        // are for that server; an Information-request asks for no addresses.
        let other_server = match client.message_type {
            message_type::SOLICIT => request.server_id.is_some(),
            message_type::INFORMATION_REQUEST => {
                request.server_id.is_some_and(|id| !ours(id)) || request.asks_for_addresses
            }
            _ => request.server_id.is_some_and(|id| !ours(id)),
        };
        if other_server {
            return ignore(Ignored::OtherServer);
        }
        // iPXE sends no architecture over DHCPv6 (`dhcpv6_tx`): its rules go without one.
        match client.arch {
            Some(ClientArch::Other(_)) => return ignore(Ignored::UnknownArch),
            None if !client.ipxe => return ignore(Ignored::UnknownArch),
            _ => {}
        }
        let identity = client.identity();
        let vars = policy::Vars {
            server: ingress.server.into(),
            http_port: self.ports.http,
            https_port: self.ports.https,
            client: &identity,
        };
        let (rule, action) = match admission.admit(client.mac) {
            Admit::Yes => {
                let Some(rule) = self.policy.decide(&identity) else {
                    return ignore(Ignored::NoRule);
                };
                (rule.name.as_str(), rule.action.resolve(&vars))
            }
            Admit::Local => (API_RULE, policy::local_boot(&vars)),
            Admit::NotOurs => return ignore(Ignored::NotOurs),
            Admit::Pending => return ignore(Ignored::ApiPending),
            Admit::Unavailable => return ignore(Ignored::ApiDown),
        };
        // A loader chain's first stage and iPXE's local-boot script are TFTP names unless the
        // client boots over HTTP, when the policy made them URLs.
        let over_http = client.protocol == Some(BootProtocol::Http);
        let tftp_name = match &action {
            BootAction::Tftp { file } => Some(*file),
            BootAction::Loader { name, .. } if !over_http => Some(*name),
            BootAction::Local { file: Some(file) } if !over_http => Some(file.as_str()),
            _ => None,
        };
        let loader: Option<&'p str> = match &action {
            BootAction::Tftp { file } => Some(file),
            BootAction::Loader { name, .. } if !over_http => Some(name),
            _ => None,
        };
        if let Some(file) = loader
            && !loaders.has_loader(file)
        {
            return ignore(Ignored::LoaderMissing { rule, file });
        }
        let built = match (&action, tftp_name) {
            (BootAction::Silent, _) => return ignore(Ignored::Silent { rule }),
            // DHCPv6 has no PXE boot menu (RFC 5970 names one URL): a PXE ROM told to boot
            // locally is left unanswered, and moves on to its next boot option.
            (BootAction::Local { file: None }, _) => return ignore(Ignored::Silent { rule }),
            (_, Some(file)) => reply::build(
                &request,
                ingress.source,
                ingress.server_duid,
                BootUrl::Tftp {
                    server: ingress.server,
                    file,
                },
            ),
            (other, None) => reply::build(
                &request,
                ingress.source,
                ingress.server_duid,
                BootUrl::Url(other.boot_file().unwrap_or_default()),
            ),
        };
        match built {
            Ok(reply) => Outcome::Reply {
                client: request.client,
                rule,
                action,
                reply,
            },
            Err(e) => ignore(Ignored::ReplyFailed(e)),
        }
    }
}
