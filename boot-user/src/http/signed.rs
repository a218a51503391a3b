//! Signed URLs for per-node data: HMAC-SHA256 over the path and an expiry, so a node's script
//! can hand it its overlay URL while another node, or anyone on the provisioning network, cannot
//! fetch it (and a leaked URL stops working).
//!
//! The signature goes into the query string: `/nodes/<mac>/overlay.cpio?expires=<unix>&sig=<hex>`.
//! BIOS iPXE fetches over plain HTTP (Debian's undionly.kpxe has no TLS), so the signature, not
//! the transport, is what protects per-node data there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac, rand};

use super::overlay::hex;

/// Bytes of a freshly generated key.
pub const KEY_LEN: usize = 32;

/// Why a signed URL was refused (all answered with 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the URL carries no signature")]
    Missing,
    #[error("the signature does not match")]
    Mismatch,
    #[error("the URL has expired")]
    Expired,
}

/// The signing key.
pub struct UrlSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner { .. }")
    }
}

impl UrlSigner {
    pub fn new(secret: &[u8]) -> UrlSigner {
        UrlSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A new random secret, for a key file written at first start.
    pub fn generate_secret() -> Result<[u8; KEY_LEN], aws_lc_rs::error::Unspecified> {
        let mut secret = [0u8; KEY_LEN];
        rand::fill(&mut secret)?;
        Ok(secret)
    }

    /// `path?expires=…&sig=…`, valid until `now + lifetime`.
    pub fn sign(&self, path: &str, now: SystemTime, lifetime: Duration) -> String {
        let expires = unix(now).saturating_add(lifetime.as_secs());
        format!("{path}?expires={expires}&sig={}", self.mac(path, expires))
    }

    /// Checks `query` (the part after `?`) for `path` at time `now`.
    pub fn verify(
        &self,
        path: &str,
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let (mut expires, mut sig) = (None, None);
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(SignatureError::Missing);
        };
        let expected = self.mac(path, expires);
        // Constant time, so the comparison leaks nothing about the right signature.
        if constant_time::verify_slices_are_equal(expected.as_bytes(), sig.as_bytes()).is_err() {
            return Err(SignatureError::Mismatch);
        }
        if unix(now) > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }

    fn mac(&self, path: &str, expires: u64) -> String {
        // The message binds the path to the expiry; "\n" cannot occur in either.
        let message = format!("{path}\n{expires}");
        hex(hmac::sign(&self.key, message.as_bytes()).as_ref())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nodes/52:54:00:00:00:01/overlay.cpio";

    #[test]
    fn a_signed_url_verifies_until_it_expires() {
        let signer = UrlSigner::new(b"secret");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let url = signer.sign(PATH, now, Duration::from_secs(600));
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, PATH);
        assert_eq!(signer.verify(path, Some(query), now), Ok(()));
        assert_eq!(
            signer.verify(path, Some(query), now + Duration::from_secs(601)),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn another_nodes_path_a_forged_expiry_or_no_signature_is_refused() {
        let signer = UrlSigner::new(b"secret");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let url = signer.sign(PATH, now, Duration::from_secs(600));
        let query = url.split_once('?').unwrap().1;
        assert_eq!(
            signer.verify("/nodes/52:54:00:00:00:02/overlay.cpio", Some(query), now),
            Err(SignatureError::Mismatch)
        );
        let forged = query.replace("expires=1000600", "expires=9999999999");
        assert_eq!(
            signer.verify(PATH, Some(&forged), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(signer.verify(PATH, None, now), Err(SignatureError::Missing));
        assert_eq!(
            signer.verify(PATH, Some("expires=5"), now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            UrlSigner::new(b"other").verify(PATH, Some(query), now),
            Err(SignatureError::Mismatch)
        );
    }
}
