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

/// The crypto provider of every TLS connection: aws-lc-rs, with its default suites. Those
/// include TLS 1.3 and TLS 1.2 ECDHE-RSA with AES-128/256-GCM (iPXE) and the X25519 group.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls server configuration for a certificate chain and its key: TLS 1.3 and 1.2,
/// HTTP/1.1 by ALPN, no client certificates.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

    #[test]
    fn fingerprints_print_like_openssl() {
        let print = fingerprint(b"");
        assert!(print.starts_with("E3:B0:C4:42"), "{print}");
        assert_eq!(print.len(), 32 * 3 - 1);
    }
}
