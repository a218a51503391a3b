//! TLS for the HTTPS listener: the rustls configuration, the certificate and key from the
//! config, and for the lab and first start a generated RSA CA and server certificate.
//!
//! Firmware facts behind the choices (DESIGN.md, "Firmware and TLS facts"): iPXE speaks TLS
//! 1.2 at most, accepts RSA server certificates only (iPXE issue #1179) and does ECDHE on
//! X25519, so the TLS 1.2 ECDHE-RSA-AES-GCM suites must stay enabled and the generated keys
//! are RSA. OVMF trusts the CAs QEMU gives it in the fw_cfg file `etc/edk2/https/cacerts`, an
//! EFI_SIGNATURE_LIST: [`efi_signature_list`] makes one from the CA.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config;

/// The CA's subject. Re-issuing a server certificate under an existing `ca.pem`/`ca.key`
/// rebuilds the issuer from this name, so it must never change.
const CA_COMMON_NAME: &str = "xdpboot lab CA";
const CA_ORGANIZATION: &str = "xdpboot";
/// Years a generated CA and server certificate are valid. Firmware has no revocation and a
/// lab CA is replaced by deleting its files.
const CA_YEARS: i32 = 20;
const SERVER_YEARS: i32 = 10;
/// Generated certificates are valid from this year on: firmware clocks are often wrong (a
/// board whose RTC lost its battery), and a not-before in the firmware's future fails.
const NOT_BEFORE_YEAR: i32 = 2000;

/// File names written beside `http.tls_cert` when a CA is generated.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CA_ESL_FILE: &str = "ca.esl";

/// EFI_CERT_X509_GUID (UEFI spec 2.10, section 32.4.1): a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
pub const EFI_CERT_X509_GUID: [u8; 16] = efi_guid(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// SignatureOwner of the lists xdpboot writes (firmware does not interpret it):
/// 8a1c5e3a-7b0e-4f4c-9d2e-78647062f0a1.
pub const XDPBOOT_OWNER_GUID: [u8; 16] = efi_guid(
    0x8a1c_5e3a,
    0x7b0e,
    0x4f4c,
    [0x9d, 0x2e, 0x78, 0x64, 0x70, 0x62, 0xf0, 0xa1],
);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error(
        "{present} exists but {absent} does not: give both the certificate and its key, or neither to generate them"
    )]
    HalfPair { present: PathBuf, absent: PathBuf },
    #[error("{cert} and {key} do not exist and http.tls_generate is off")]
    Missing { cert: PathBuf, key: PathBuf },
    #[error(
        "{ca} and its key are not the CA xdpboot makes, so no server certificate can be issued under them: issue one yourself"
    )]
    ForeignCa { ca: PathBuf },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider of every TLS connection: aws-lc-rs with its default suites and groups
/// (TLS 1.3, TLS 1.2 ECDHE-RSA with AES-128/256-GCM for iPXE, X25519 and the NIST curves),
/// then TLS 1.2 DHE-RSA-AES-GCM with the RFC 7919 groups ffdhe2048 and ffdhe3072 for firmware
/// without elliptic curves (Debian 12's OVMF, see [`ffdhe`](super::ffdhe)). The order is the
/// server's preference: every ECDHE suite comes before the DHE ones.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .extend_from_slice(super::ffdhe::CIPHER_SUITES);
    provider
        .kx_groups
        .extend_from_slice(super::ffdhe::KX_GROUPS);
    Arc::new(provider)
}

/// The rustls server configuration for a certificate chain and its key: TLS 1.3 and 1.2,
/// HTTP/1.1 by ALPN, no client certificates.
///
/// Suites are chosen in the server's order, not the client's, so DHE goes only to a client
/// that cannot do ECDHE with us (no ECDHE suite, or no curve in common); one that lists DHE
/// first still gets ECDHE. Such a client gets DHE even without a supported_groups extension:
/// rustls then picks ffdhe2048 itself (RFC 7919 §4).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The TLS configuration `[http]` asks for: the certificate and key it names, generated first
/// when neither exists and `tls_generate` is on.
pub fn load_or_generate(http: &config::Http) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = (&http.tls_cert, &http.tls_key);
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) if http.tls_generate => {
            let dir = cert.parent().unwrap_or(Path::new("/"));
            let pki = write_generated(dir, cert, key, &certificate_names(&http.tls_names))?;
            tracing::info!(
                ca = %dir.join(CA_CERT_FILE).display(),
                efi_signature_list = %dir.join(CA_ESL_FILE).display(),
                cert = %cert.display(),
                sha256 = %fingerprint(&pki.ca_der),
                "generated a TLS server certificate; clients must trust this CA"
            );
        }
        (false, false) => {
            return Err(TlsError::Missing {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        (true, false) => return Err(half_pair(cert, key)),
        (false, true) => return Err(half_pair(key, cert)),
    }
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    if let Ok(signing) = provider()
        .key_provider
        .load_private_key(private_key.clone_key())
        && signing.algorithm() != rustls::SignatureAlgorithm::RSA
    {
        tracing::warn!(
            key = %key.display(),
            algorithm = ?signing.algorithm(),
            "the TLS key is not RSA: iPXE will refuse this server (it accepts RSA certificates only)"
        );
    }
    server_config(chain, private_key)
}

fn half_pair(present: &Path, absent: &Path) -> TlsError {
    TlsError::HalfPair {
        present: present.to_path_buf(),
        absent: absent.to_path_buf(),
    }
}

/// Every certificate in a PEM file, in order (the server's first).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A generated CA and server certificate, all PEM except `ca_der`.
pub struct Pki {
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
    pub ca_key_pem: String,
    /// The server certificate followed by the CA: what the listener presents.
    pub server_chain_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    /// The TLS configuration presenting this server certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let pem_error = |e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: PathBuf::from("<generated>"),
            message: e.to_string(),
        };
        let chain = CertificateDer::pem_slice_iter(self.server_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error)?;
        let key =
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(pem_error)?;
        server_config(chain, key)
    }
}

/// Makes a server certificate for `names` (DNS names or IP addresses, see
/// [`certificate_names`]) under the CA given as PEM certificate and key, or under a new RSA CA.
pub fn generate(names: &[String], ca: Option<(&str, &str)>) -> Result<Pki, TlsError> {
    let (ca_pem, ca_key) = match ca {
        Some((cert, key)) => (cert.to_owned(), KeyPair::from_pem(key)?),
        None => {
            let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
            let cert = ca_params().self_signed(&key)?;
            (cert.pem(), key)
        }
    };
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TlsError::Pem {
            path: PathBuf::from(CA_CERT_FILE),
            message: e.to_string(),
        })?
        .to_vec();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params(), ca_key);

    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map_or("xdpboot", String::as_str),
    );
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(NOT_BEFORE_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(current_year() + SERVER_YEARS, 1, 1);
    let server = params.signed_by(&key, &issuer)?;
    let pki = Pki {
        server_chain_pem: format!("{}{}", server.pem(), ca_pem),
        server_key_pem: key.serialize_pem(),
        ca_pem,
        ca_key_pem,
        ca_der,
    };
    verify_chain(&pki, names)?;
    Ok(pki)
}

/// The CA's parameters; the same every time, so an existing CA key can issue again.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(NOT_BEFORE_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(current_year() + CA_YEARS, 1, 1);
    params
}

/// Checks that the server certificate chains to the CA for its first name: catches a reused
/// `ca.pem` that xdpboot did not make (its issuer name would not match).
fn verify_chain(pki: &Pki, names: &[String]) -> Result<(), TlsError> {
    let foreign = || TlsError::ForeignCa {
        ca: PathBuf::from(CA_CERT_FILE),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_der.clone()))
        .map_err(|_| foreign())?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|_| foreign())?;
    let chain = CertificateDer::pem_slice_iter(pki.server_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| foreign())?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(foreign());
    };
    let name = names.first().map_or("localhost", String::as_str);
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| foreign())?;
    verifier
        .verify_server_cert(
            end_entity,
            intermediates,
            &server_name,
            &[],
            UnixTime::now(),
        )
        .map_err(|_| foreign())?;
    Ok(())
}

/// Generates into `dir` (reusing `ca.pem` and `ca.key` there if both exist), writes the server
/// chain and key to `cert` and `key`, and the CA as `ca.esl` for OVMF.
pub fn write_generated(
    dir: &Path,
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<Pki, TlsError> {
    let (ca_cert_path, ca_key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let existing = if ca_cert_path.exists() && ca_key_path.exists() {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Some((read(&ca_cert_path)?, read(&ca_key_path)?))
    } else {
        None
    };
    let pki = generate(
        names,
        existing.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
    .map_err(|e| match e {
        TlsError::ForeignCa { .. } => TlsError::ForeignCa {
            ca: ca_cert_path.clone(),
        },
        e => e,
    })?;
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    if existing.is_none() {
        write_file(&ca_key_path, pki.ca_key_pem.as_bytes(), 0o600)?;
        write_file(&ca_cert_path, pki.ca_pem.as_bytes(), 0o644)?;
    }
    write_file(
        &dir.join(CA_ESL_FILE),
        &efi_signature_list(&pki.ca_der),
        0o644,
    )?;
    write_file(key, pki.server_key_pem.as_bytes(), 0o600)?;
    write_file(cert, pki.server_chain_pem.as_bytes(), 0o644)?;
    Ok(pki)
}

/// Writes through a temporary file and a rename, so a reader never sees half a key.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)
}

/// The names a generated server certificate carries: `extra` first (the configured
/// `tls_names`), then the host name, "localhost", and every address on the host now
/// (link-local IPv6 left out: a URL cannot name it without a zone).
pub fn certificate_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = extra.to_vec();
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_owned());
        }
    }
    names.push("localhost".to_owned());
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifaddr in addrs {
            let Some(addr) = ifaddr.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                if ip.is_unicast_link_local() {
                    continue;
                }
                IpAddr::V6(ip)
            } else {
                continue;
            };
            names.push(ip.to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// A certificate's SHA-256 fingerprint as colon-separated hex (how `openssl x509
/// -fingerprint -sha256` prints it, and how iPXE's `trust` setting takes it without colons).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One EFI_SIGNATURE_LIST holding one X.509 certificate (UEFI spec 2.10, section 32.4.1):
/// what OVMF reads from the fw_cfg file `etc/edk2/https/cacerts` (QEMU
/// `-fw_cfg name=etc/edk2/https/cacerts,file=ca.esl`) to trust a CA for HTTPS boot.
///
/// Layout, little-endian: SignatureType (16-byte GUID, EFI_CERT_X509_GUID), SignatureListSize
/// (u32, the whole list), SignatureHeaderSize (u32, 0), SignatureSize (u32, 16 + DER length);
/// then one EFI_SIGNATURE_DATA: SignatureOwner (GUID) and the DER certificate.
pub fn efi_signature_list(cert_der: &[u8]) -> Vec<u8> {
    const LIST_HEADER: usize = 16 + 4 + 4 + 4;
    let signature_size = 16 + cert_der.len();
    let list_size = LIST_HEADER + signature_size;
    let mut esl = Vec::with_capacity(list_size);
    esl.extend_from_slice(&EFI_CERT_X509_GUID);
    esl.extend_from_slice(&u32_le(list_size));
    esl.extend_from_slice(&0u32.to_le_bytes());
    esl.extend_from_slice(&u32_le(signature_size));
    esl.extend_from_slice(&XDPBOOT_OWNER_GUID);
    esl.extend_from_slice(cert_der);
    esl
}

fn u32_le(n: usize) -> [u8; 4] {
    // A certificate is far below 4 GiB: DER lengths on the wire are bounded by TLS (2^24).
    u32::try_from(n)
        .expect("an X.509 certificate is smaller than 4 GiB")
        .to_le_bytes()
}

/// An EFI_GUID in its in-memory byte order: the first three fields little-endian, the last
/// eight bytes as written.
const fn efi_guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year; a day off at a year's edge does not matter for a validity bound.
    1970 + (secs / 31_556_952) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x509_guid_has_the_uefi_byte_order() {
        assert_eq!(
            EFI_CERT_X509_GUID,
            [
                0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b,
                0xf0, 0x72
            ]
        );
    }

    #[test]
    fn a_signature_list_wraps_one_der_certificate() {
        let der = [0x30u8, 0x82, 0x01, 0x02, 0xaa];
        let esl = efi_signature_list(&der);
        assert_eq!(esl.len(), 28 + 16 + der.len());
        assert_eq!(&esl[..16], &EFI_CERT_X509_GUID);
        assert_eq!(
            u32::from_le_bytes(esl[16..20].try_into().unwrap()) as usize,
            esl.len()
        );
        assert_eq!(u32::from_le_bytes(esl[20..24].try_into().unwrap()), 0);
        assert_eq!(
            u32::from_le_bytes(esl[24..28].try_into().unwrap()) as usize,
            16 + der.len()
        );
        assert_eq!(&esl[28..44], &XDPBOOT_OWNER_GUID);
        assert_eq!(&esl[44..], &der);
    }

    /// What the server side of one handshake agreed on.
    #[derive(Debug, PartialEq)]
    struct Negotiated {
        version: rustls::ProtocolVersion,
        suite: rustls::CipherSuite,
        group: Option<rustls::NamedGroup>,
    }

    /// Longest a test connection may stall (the clients are local processes).
    const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

    /// A generated CA (written to `dir/ca.pem`) and a server for "localhost" on a loopback
    /// port that takes one connection, answers one request with "ok" and reports what the
    /// handshake agreed on.
    fn serve_one(dir: &Path) -> (u16, std::thread::JoinHandle<Result<Negotiated, String>>) {
        use std::io::Read;
        let pki = generate(&["localhost".to_owned()], None).unwrap();
        fs::write(dir.join(CA_CERT_FILE), &pki.ca_pem).unwrap();
        let config = pki.server_config().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().map_err(|e| e.to_string())?;
            tcp.set_read_timeout(Some(CONNECTION_TIMEOUT)).unwrap();
            tcp.set_write_timeout(Some(CONNECTION_TIMEOUT)).unwrap();
            let mut tls = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp).map_err(|e| e.to_string())?;
            }
            let negotiated = Negotiated {
                version: tls.protocol_version().ok_or("no version")?,
                suite: tls.negotiated_cipher_suite().ok_or("no suite")?.suite(),
                group: tls.negotiated_key_exchange_group().map(|g| g.name()),
            };
            // A client that asks for something gets "ok"; one that only shakes hands and
            // leaves (s_client with no input) is fine too.
            let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
            let mut head = [0u8; 1024];
            if let Ok(n) = stream.read(&mut head)
                && head[..n].starts_with(b"GET ")
            {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                tls.send_close_notify();
                let _ = tls.complete_io(&mut tcp);
            }
            Ok(negotiated)
        });
        (port, server)
    }

    /// `openssl s_client` (Debian's openssl) against [`serve_one`] with extra arguments; what
    /// the server agreed on, and s_client's output.
    fn s_client(args: &[&str]) -> (Negotiated, String) {
        let dir = tempdir();
        let (port, server) = serve_one(&dir);
        let output = std::process::Command::new("openssl")
            .arg("s_client")
            .args([
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
            ])
            .args(["-verify_return_error", "-CAfile"])
            .arg(dir.join(CA_CERT_FILE))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (Debian's openssl package) runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let negotiated = server
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(output.status.success(), "s_client {args:?} failed:\n{text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        (negotiated, text)
    }

    /// A directory of the test's own, removed when dropped.
    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpboot-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn a_tls12_client_offering_only_dhe_and_no_groups_like_ovmf_gets_dhe_on_ffdhe2048() {
        // With no ECDHE suite and TLS 1.2 at most, OpenSSL 3.0 sends no supported_groups
        // extension at all: the ClientHello Debian 12's OVMF sends (DESIGN.md).
        let (negotiated, text) = s_client(&["-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384"]);
        assert_eq!(
            negotiated,
            Negotiated {
                version: rustls::ProtocolVersion::TLSv1_2,
                suite: rustls::CipherSuite::TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
                group: Some(rustls::NamedGroup::FFDHE2048),
            }
        );
        assert!(text.contains("Server Temp Key: DH, 2048 bits"), "{text}");
    }

    #[test]
    fn a_tls12_client_offering_dhe_before_ecdhe_still_gets_ecdhe() {
        let (negotiated, _) = s_client(&[
            "-tls1_2",
            "-cipher",
            "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
        ]);
        assert_eq!(
            negotiated,
            Negotiated {
                version: rustls::ProtocolVersion::TLSv1_2,
                suite: rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                group: Some(rustls::NamedGroup::X25519),
            }
        );
    }

    /// OpenSSL 3.0 names FFDHE groups only for TLS 1.3, so a rustls client (with this
    /// module's DHE suites and only ffdhe3072) asks for the bigger group.
    #[test]
    fn a_tls12_client_naming_ffdhe3072_gets_it() {
        use std::io::Read;
        let dir = tempdir();
        let (port, server) = serve_one(&dir);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.join(CA_CERT_FILE)).unwrap())
            .unwrap();
        let client_provider = CryptoProvider {
            cipher_suites: super::super::ffdhe::CIPHER_SUITES.to_vec(),
            kx_groups: vec![super::super::ffdhe::KX_GROUPS[1]],
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(CONNECTION_TIMEOUT)).unwrap();
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        assert!(response.ends_with(b"\r\n\r\nok"), "{response:?}");
        assert_eq!(
            server.join().unwrap().unwrap(),
            Negotiated {
                version: rustls::ProtocolVersion::TLSv1_2,
                suite: rustls::CipherSuite::TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
                group: Some(rustls::NamedGroup::FFDHE3072),
            }
        );
    }

    #[test]
    fn a_tls13_client_still_gets_tls13_on_an_elliptic_curve() {
        let (negotiated, _) = s_client(&[]);
        assert_eq!(negotiated.version, rustls::ProtocolVersion::TLSv1_3);
        assert_ne!(negotiated.group, None);
        assert!(
            !matches!(
                negotiated.group,
                Some(rustls::NamedGroup::FFDHE2048 | rustls::NamedGroup::FFDHE3072)
            ),
            "{negotiated:?}"
        );
    }

    #[test]
    fn fingerprints_print_like_openssl() {
        let print = fingerprint(b"");
        assert!(print.starts_with("E3:B0:C4:42"), "{print}");
        assert_eq!(print.len(), 32 * 3 - 1);
    }
}
