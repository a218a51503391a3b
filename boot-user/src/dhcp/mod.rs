//! The proxyDHCP core, sans I/O: bytes and addresses in, a reply (or the reason for silence)
//! out. Both backends (UDP sockets and XDP) call [`Responder::handle`]; there is one DHCP
//! implementation.

pub mod classify;
pub mod policy;
pub mod reply;
pub mod stats;

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::MessageType;

pub use classify::{Client, ClientArch, Malformed, ServerPort};
pub use policy::{BootAction, BootFile, Policy};
pub use reply::{Destination, Handout, Reply, ReplyKind};

/// Answers whether a loader exists under the TFTP root. The daemon implements it against the
/// file system; tests use a set. Keeps file I/O out of the core.
pub trait LoaderIndex {
    fn has_loader(&self, file: &str) -> bool;
}

/// Whether a machine is ours to boot, when an external system decides (the boot API): asked
/// after the request is classified as a boot request and before the policy runs. Must answer
/// at once; [`AdmitAll`] is the answer without an external system.
pub trait Admission {
    fn admit(&self, mac: Option<[u8; 6]>) -> Admit;
}

/// An [`Admission`] answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The external system says: boot from its own disk (see [`policy::local_boot`]).
    Local,
    /// The external system said this machine is not ours.
    NotOurs,
    /// Still being asked; the client's next request will be answered.
    Pending,
    /// The external system cannot be asked: not answered rather than answered wrongly.
    Unavailable,
}

/// Every machine is ours: the config's policy alone decides.
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: Option<[u8; 6]>) -> Admit {
        Admit::Yes
    }
}

/// Ports that URL templates may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPorts {
    pub http: u16,
    pub https: u16,
}

/// Where a request came from and which of our addresses it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingress {
    pub port: ServerPort,
    /// The request's IP source and UDP source port.
    pub source: SocketAddrV4,
    /// The address of the ingress interface to hand out (siaddr, option 54, URLs). The backend
    /// picks it with [`crate::net::iface::Interface::server_address`].
    pub server: Ipv4Addr,
}

/// The rule name an answer decided by the boot API is logged and counted under.
pub const API_RULE: &str = "boot-api";

/// Why a well-formed request gets no reply. Counted under [`Ignored::name`]. Names are borrowed
/// from the policy that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored<'p> {
    /// No PXEClient/HTTPClient vendor class: the site's DHCP server's business alone.
    NotBootRequest,
    /// Port 67 answers DISCOVERs only; port 4011 REQUESTs and INFORMs only (PXE 2.1 §2.2).
    MessageType(MessageType),
    /// A boot request with an architecture no policy knows (or none at all).
    UnknownArch,
    /// No rule matched.
    NoRule,
    /// A rule said to stay silent.
    Silent { rule: &'p str },
    /// The rule's TFTP loader is not in the TFTP root; offering it would strand the client.
    LoaderMissing { rule: &'p str, file: &'p str },
    /// The reply could not be built.
    ReplyFailed(reply::ReplyError),
    /// The boot API said the machine is not ours.
    NotOurs,
    /// The boot API is being asked about the machine; its next request is answered.
    ApiPending,
    /// The boot API cannot be reached.
    ApiDown,
}

impl Ignored<'_> {
    /// Every name, in [`Ignored::index`] order.
    pub const NAMES: [&'static str; 10] = [
        "not_boot_request",
        "message_type",
        "unknown_arch",
        "no_rule",
        "silent",
        "loader_missing",
        "reply_failed",
        "not_ours",
        "api_pending",
        "api_down",
    ];

    /// The reason's place in [`Ignored::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Ignored::NotBootRequest => 0,
            Ignored::MessageType(_) => 1,
            Ignored::UnknownArch => 2,
            Ignored::NoRule => 3,
            Ignored::Silent { .. } => 4,
            Ignored::LoaderMissing { .. } => 5,
            Ignored::ReplyFailed(_) => 6,
            Ignored::NotOurs => 7,
            Ignored::ApiPending => 8,
            Ignored::ApiDown => 9,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Ignored::NotBootRequest => "not_boot_request",
            Ignored::MessageType(_) => "message_type",
            Ignored::UnknownArch => "unknown_arch",
            Ignored::NoRule => "no_rule",
            Ignored::Silent { .. } => "silent",
            Ignored::LoaderMissing { .. } => "loader_missing",
            Ignored::ReplyFailed(_) => "reply_failed",
            Ignored::NotOurs => "not_ours",
            Ignored::ApiPending => "api_pending",
            Ignored::ApiDown => "api_down",
        }
    }
}

/// The result of handling one request; names are borrowed from the policy that decided.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "the reply's bytes are inline so that answering allocates nothing; an outcome is \
              made once per request and read in place"
)]
pub enum Outcome<'p> {
    /// Dropped before classification.
    Malformed(Malformed),
    /// Understood, deliberately not answered.
    Ignored { client: Client, reason: Ignored<'p> },
    /// Answered.
    Reply {
        client: Client,
        rule: &'p str,
        action: BootAction<'p>,
        reply: Reply,
    },
}

/// The proxyDHCP responder: a policy and the ports URLs point at.
#[derive(Debug, Clone)]
pub struct Responder {
    pub policy: Policy,
    pub ports: UrlPorts,
}

impl Responder {
    pub fn new(policy: Policy, ports: UrlPorts) -> Responder {
        Responder { policy, ports }
    }

    /// Handles one request payload (the UDP payload: the BOOTP message).
    pub fn handle(
        &self,
        bytes: &[u8],
        ingress: &Ingress,
        loaders: &dyn LoaderIndex,
        admission: &dyn Admission,
    ) -> Outcome<'_> {
        let request = match classify::parse(bytes, ingress.port) {
            Ok(request) => request,
            Err(malformed) => return Outcome::Malformed(malformed),
        };
        let client = &request.client;
        let ignore = |reason| Outcome::Ignored {
            client: request.client,
            reason,
        };

        // Never answer what is not a boot request: the site's DHCP server owns addresses.
        if !client.is_boot_request() {
            return ignore(Ignored::NotBootRequest);
        }
        let expected = match ingress.port {
            ServerPort::Dhcp => matches!(client.message_type, MessageType::Discover),
            ServerPort::Pxe => matches!(
                client.message_type,
                MessageType::Request | MessageType::Inform
            ),
        };
        if !expected {
            return ignore(Ignored::MessageType(client.message_type));
        }
        if matches!(client.arch, None | Some(ClientArch::Other(_))) {
            return ignore(Ignored::UnknownArch);
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
        let handout = match &action {
            BootAction::Silent => return ignore(Ignored::Silent { rule }),
            BootAction::Tftp { file }
            | BootAction::Loader {
                name: file,
                file: _,
                ..
            } if client.protocol != Some(classify::BootProtocol::Http)
                && !loaders.has_loader(file) =>
            {
                return ignore(Ignored::LoaderMissing { rule, file });
            }
            BootAction::Local { file: None } => Handout::LocalBootMenu,
            other => Handout::File(other.boot_file().unwrap_or_default()),
        };
        match reply::build(&request, ingress.source, ingress.server, handout) {
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
