//! Finite-field Diffie-Hellman (RFC 7919) for TLS 1.2 `TLS_DHE_RSA_WITH_AES_*_GCM_*`: the key
//! exchange of firmware whose TLS has no elliptic curves.
//!
//! Debian 12's OVMF (EDK2 2022.11) does UEFI HTTPS boot with an OpenSSL built without EC: its
//! ClientHello offers DHE-RSA, static-RSA suites and no supported_groups extension (DESIGN.md,
//! "Verified later"). rustls has no DHE of its own, but serves it through a provider's key
//! exchange groups and TLS 1.2 suites whose `kx` is DHE; when a TLS 1.2 client names no group,
//! rustls picks the provider's first FFDHE group itself, as RFC 7919 §4 allows.
//!
//! Only the groups of RFC 7919 Appendix A (p and g from `rustls::ffdhe_groups`) are offered,
//! never a group of our own or of the client's making, and only in TLS 1.2: a TLS 1.3 client
//! always gets an elliptic curve. The exponentiation is crypto-bigint's constant-time
//! Montgomery exponentiation over fixed-size integers; the secret exponent comes from aws-lc's
//! RNG.

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::zeroize::Zeroize;
use crypto_bigint::{Odd, U512, U2048, U3072, Uint};
use rustls::crypto::{
    ActiveKeyExchange, CipherSuiteCommon, KeyExchangeAlgorithm, SharedSecret, SupportedKxGroup,
};
use rustls::ffdhe_groups::{self, FfdheGroup};
use rustls::{
    CipherSuite, NamedGroup, PeerMisbehaved, ProtocolVersion, SupportedCipherSuite,
    Tls12CipherSuite,
};

/// Bits of the secret exponent. RFC 7919 §5.2 allows a short exponent of at least twice the
/// group's security strength, and Appendix A gives the minimum per group: 225 bits for
/// ffdhe2048, 275 for ffdhe3072. 512 is well above both and a quarter of the work of a
/// full-width exponent for ffdhe2048.
const EXPONENT_BITS: u32 = U512::BITS;

/// The FFDHE groups, strongest last: rustls uses the provider's first FFDHE group when the
/// client names none (RFC 7919 §4), and ffdhe2048 is what 2022's OVMF is quick with under TCG.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] = &[&FFDHE2048, &FFDHE3072];

static FFDHE2048: Ffdhe<{ U2048::LIMBS }> = Ffdhe {
    name: NamedGroup::FFDHE2048,
    group: ffdhe_groups::FFDHE2048,
};
static FFDHE3072: Ffdhe<{ U3072::LIMBS }> = Ffdhe {
    name: NamedGroup::FFDHE3072,
    group: ffdhe_groups::FFDHE3072,
};

/// `TLS_DHE_RSA_WITH_AES_256_GCM_SHA384` (0x009F, RFC 5288) and `…_AES_128_GCM_SHA256`
/// (0x009E): the ECDHE-RSA suites of aws-lc-rs with DHE as their key exchange. Same record
/// protection, PRF and RSA signature schemes; only the ServerKeyExchange carries FFDHE
/// parameters instead of a curve point.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    SupportedCipherSuite::Tls12(&TLS_DHE_RSA_WITH_AES_256_GCM_SHA384),
    SupportedCipherSuite::Tls12(&TLS_DHE_RSA_WITH_AES_128_GCM_SHA256),
];

static TLS_DHE_RSA_WITH_AES_256_GCM_SHA384: Tls12CipherSuite = dhe_variant(
    &rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
);
static TLS_DHE_RSA_WITH_AES_128_GCM_SHA256: Tls12CipherSuite = dhe_variant(
    &rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
);

const fn dhe_variant(ecdhe: &'static SupportedCipherSuite, suite: CipherSuite) -> Tls12CipherSuite {
    match ecdhe {
        SupportedCipherSuite::Tls12(ecdhe) => Tls12CipherSuite {
            common: CipherSuiteCommon {
                suite,
                ..ecdhe.common
            },
            kx: KeyExchangeAlgorithm::DHE,
            ..**ecdhe
        },
        _ => panic!("an ECDHE-RSA suite is a TLS 1.2 suite"),
    }
}

/// One RFC 7919 group over `LIMBS` 64-bit limbs (its modulus is exactly that wide).
#[derive(Debug)]
struct Ffdhe<const LIMBS: usize> {
    name: NamedGroup,
    group: FfdheGroup<'static>,
}

impl<const LIMBS: usize> Ffdhe<LIMBS> {
    /// Our key pair for `exponent`: the public value `g^exponent mod p`, big-endian and as wide
    /// as p.
    fn key_pair(&self, exponent: U512) -> ActiveFfdhe<LIMBS> {
        let p = uint_from_be::<LIMBS>(self.group.p)
            .and_then(|p| Odd::new(p).into_option())
            .expect("an RFC 7919 modulus is an odd prime as wide as its group's integers");
        // p is public: the variable-time setup of the Montgomery parameters leaks nothing.
        let params = FixedMontyParams::new_vartime(p);
        let g = uint_from_be::<LIMBS>(self.group.g).expect("an RFC 7919 generator is 2");
        let public = FixedMontyForm::new(&g, &params).pow(&exponent).retrieve();
        ActiveFfdhe {
            name: self.name,
            group: self.group,
            params,
            exponent,
            public: public.to_be_bytes().as_ref().to_vec(),
        }
    }
}

/// A big-endian unsigned integer of at most `LIMBS` limbs, leading zeros allowed.
fn uint_from_be<const LIMBS: usize>(bytes: &[u8]) -> Option<Uint<LIMBS>> {
    let width = Uint::<LIMBS>::BYTES;
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[first..];
    if digits.len() > width {
        return None;
    }
    let mut padded = vec![0u8; width];
    padded[width - digits.len()..].copy_from_slice(digits);
    Some(Uint::from_be_slice(&padded))
}

impl<const LIMBS: usize> SupportedKxGroup for Ffdhe<LIMBS> {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut random = [0u8; (EXPONENT_BITS / 8) as usize];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        // The top bit set keeps the exponent far from 0 and 1 (and its bit length fixed).
        random[0] |= 0x80;
        let exponent = U512::from_be_slice(&random);
        random.zeroize();
        Ok(Box::new(self.key_pair(exponent)))
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        Some(self.group)
    }

    fn name(&self) -> NamedGroup {
        self.name
    }

    /// TLS 1.2 only: TLS 1.3 clients all do X25519 or a NIST curve with us.
    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_2
    }
}

/// Our half of one exchange: the secret exponent and `g^exponent`.
struct ActiveFfdhe<const LIMBS: usize> {
    name: NamedGroup,
    group: FfdheGroup<'static>,
    params: FixedMontyParams<LIMBS>,
    exponent: U512,
    public: Vec<u8>,
}

impl<const LIMBS: usize> ActiveFfdhe<LIMBS> {
    /// The peer's public value as an integer, if RFC 7919 §5.1 allows it: `1 < Y < p - 1`.
    /// Anything else (0, 1, p - 1, or not below p) would pin the shared secret to a few values.
    /// The width of dh_Yc is not checked: TLS 1.2 peers may send it with or without leading
    /// zeros.
    fn peer_public(&self, peer: &[u8]) -> Option<Uint<LIMBS>> {
        let y = uint_from_be::<LIMBS>(peer)?;
        let p_minus_one = self.params.modulus().as_ref().wrapping_sub(&Uint::ONE);
        // Public values: variable-time comparisons are fine.
        let above_one = y.cmp_vartime(&Uint::ONE).is_gt();
        let below_p_minus_one = y.cmp_vartime(&p_minus_one).is_lt();
        (above_one && below_p_minus_one).then_some(y)
    }
}

impl<const LIMBS: usize> ActiveKeyExchange for ActiveFfdhe<LIMBS> {
    /// The shared secret as wide as p (RFC 8446 §7.4.1); rustls strips its leading zeros for
    /// TLS 1.2 (RFC 5246 §8.1.2) in `complete_for_tls_version`.
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let y = self
            .peer_public(peer_pub_key)
            .ok_or(rustls::Error::PeerMisbehaved(
                PeerMisbehaved::InvalidKeyShare,
            ))?;
        let shared = FixedMontyForm::new(&y, &self.params)
            .pow(&self.exponent)
            .retrieve();
        let mut bytes = shared.to_be_bytes();
        let secret = SharedSecret::from(bytes.as_ref());
        bytes.zeroize();
        Ok(secret)
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        Some(self.group)
    }

    fn group(&self) -> NamedGroup {
        self.name
    }
}

impl<const LIMBS: usize> Drop for ActiveFfdhe<LIMBS> {
    fn drop(&mut self) {
        // Best effort: the exponent is `Copy`, but this is the copy that lives longest.
        self.exponent.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_groups_are_rfc_7919_ffdhe2048_then_ffdhe3072_for_tls12_only() {
        let names: Vec<NamedGroup> = KX_GROUPS.iter().map(|g| g.name()).collect();
        assert_eq!(names, [NamedGroup::FFDHE2048, NamedGroup::FFDHE3072]);
        for group in KX_GROUPS {
            assert!(group.usable_for_version(ProtocolVersion::TLSv1_2));
            assert!(!group.usable_for_version(ProtocolVersion::TLSv1_3));
        }
    }

    #[test]
    fn two_parties_agree_on_one_secret_as_wide_as_p() {
        for (group, width) in [(KX_GROUPS[0], 256), (KX_GROUPS[1], 384)] {
            let started = Instant::now();
            let (ours, theirs) = (group.start().unwrap(), group.start().unwrap());
            let (our_public, their_public) = (ours.pub_key().to_vec(), theirs.pub_key().to_vec());
            assert_eq!(our_public.len(), width, "{:?}", group.name());
            assert_ne!(our_public, their_public);
            let ours = ours.complete(&their_public).unwrap();
            let theirs = theirs.complete(&our_public).unwrap();
            eprintln!(
                "{:?}: two key pairs and two secrets in {:?}",
                group.name(),
                started.elapsed()
            );
            assert_eq!(ours.secret_bytes(), theirs.secret_bytes());
            assert_eq!(ours.secret_bytes().len(), width);
        }
    }

    /// A known answer that does not trust the exponentiation: p = 2^n - c, so
    /// g^n = 2^n = c (mod p), and c is p negated in n-bit arithmetic.
    #[test]
    fn two_to_the_width_of_p_is_p_negated() {
        let public = FFDHE2048.key_pair(U512::from_u64(2048)).public.clone();
        let p = U2048::from_be_slice(ffdhe_groups::FFDHE2048.p);
        assert_eq!(public, p.wrapping_neg().to_be_bytes().as_ref());
        let public = FFDHE3072.key_pair(U512::from_u64(3072)).public.clone();
        let p = U3072::from_be_slice(ffdhe_groups::FFDHE3072.p);
        assert_eq!(public, p.wrapping_neg().to_be_bytes().as_ref());
    }

    #[test]
    fn a_peer_value_outside_one_and_p_minus_one_is_refused() {
        let ours = FFDHE2048.key_pair(U512::from_u64(12345));
        let p = U2048::from_be_slice(ffdhe_groups::FFDHE2048.p);
        let be = |n: U2048| n.to_be_bytes().as_ref().to_vec();
        let mut longer = vec![1u8];
        longer.extend_from_slice(&be(U2048::from_u64(2)));
        for (what, peer) in [
            ("empty", vec![]),
            ("zero", vec![0]),
            ("one", vec![1]),
            ("one, padded", be(U2048::ONE)),
            ("p - 1", be(p.wrapping_sub(&U2048::ONE))),
            ("p", be(p)),
            ("p + 1", be(p.wrapping_add(&U2048::ONE))),
            ("wider than p", longer),
        ] {
            assert!(ours.peer_public(&peer).is_none(), "{what} refused");
        }
        let mut padded = vec![0u8; 300];
        padded[299] = 2;
        for (what, peer) in [
            ("two", vec![2]),
            ("two, zeros beyond p's width", padded),
            ("p - 2", be(p.wrapping_sub(&U2048::from_u64(2)))),
        ] {
            assert!(ours.peer_public(&peer).is_some(), "{what} accepted");
        }
        let refused = Box::new(ours).complete(&[1]);
        assert!(
            matches!(
                refused,
                Err(rustls::Error::PeerMisbehaved(
                    PeerMisbehaved::InvalidKeyShare
                ))
            ),
            "a bad peer value fails the handshake"
        );
    }

    #[test]
    fn the_dhe_suites_are_aws_lc_rs_ecdhe_rsa_suites_with_dhe_key_exchange() {
        let suites: Vec<(CipherSuite, KeyExchangeAlgorithm)> = CIPHER_SUITES
            .iter()
            .map(|s| match s {
                SupportedCipherSuite::Tls12(s) => (s.common.suite, s.kx),
                _ => panic!("TLS 1.2 suites only"),
            })
            .collect();
        assert_eq!(
            suites,
            [
                (
                    CipherSuite::TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
                    KeyExchangeAlgorithm::DHE
                ),
                (
                    CipherSuite::TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
                    KeyExchangeAlgorithm::DHE
                ),
            ]
        );
        for suite in CIPHER_SUITES {
            assert!(suite.usable_for_signature_algorithm(rustls::SignatureAlgorithm::RSA));
            assert!(!suite.usable_for_signature_algorithm(rustls::SignatureAlgorithm::ECDSA));
        }
    }
}
