//! TLS to Redis (`rediss://`), for one Redis, a Cluster and Sentinel alike
//! (docs/ledger.md, "Connecting to Redis").
//!
//! - Crypto: rustls on `ring`, the one provider compiled into the binary
//!   (redis-rs' `tokio-rustls-comp` keeps rustls' default features off, so
//!   `aws-lc-rs` is never built). redis-rs builds its rustls configs from
//!   the process default provider; [`use_ring`] installs `ring` as that
//!   default before any connection, so no code path depends on which
//!   provider rustls would pick, and none can panic for want of one.
//! - Trust: the web PKI roots compiled into the binary (the same Mozilla
//!   set the upstream client uses; nothing read from the host, so a slim
//!   container without `ca-certificates` works), or — with `ledger.tls_ca`
//!   — only the certificate authorities of that PEM file.
//! - Server name: the URL's host (SNI and certificate check); an IP
//!   address is checked against the certificate's IP SANs.
//! - Credentials: `user:password@` in the URL (`AUTH user password` after
//!   the handshake).

use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::ledger::LedgerError;

/// Makes `ring` the process default crypto provider, if nothing is yet.
pub(super) fn use_ring() {
    // An error only says a default is already installed; `ring` is the only
    // provider compiled in, so that default is `ring` as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What `rediss://` connections trust: `None` = the built-in web PKI roots.
#[derive(Clone, Default)]
pub(super) struct Roots(Option<TlsCertificates>);

impl Roots {
    /// From the PEM text of `ledger.tls_ca`: at least one certificate, each
    /// one a valid X.509 trust anchor.
    pub(super) fn from_pem(pem: Option<&[u8]>) -> Result<Roots, LedgerError> {
        let Some(pem) = pem else {
            return Ok(Roots(None));
        };
        let mut anchors = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate
                .map_err(|e| LedgerError::Unavailable(format!("tls_ca: not valid PEM ({e})")))?;
            anchors.add(certificate).map_err(|e| {
                LedgerError::Unavailable(format!("tls_ca: not a usable CA certificate ({e})"))
            })?;
        }
        if anchors.is_empty() {
            return Err(LedgerError::Unavailable(
                "tls_ca: the file holds no PEM certificate".into(),
            ));
        }
        Ok(Roots(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        })))
    }

    pub(super) fn certificates(&self) -> Option<&TlsCertificates> {
        self.0.as_ref()
    }
}

/// A client for one `redis://` or `rediss://` URL.
pub(super) fn client(url: &str, roots: &Roots) -> Result<redis::Client, LedgerError> {
    let bad_url = |e: redis::RedisError| LedgerError::Unavailable(format!("bad redis url: {e}"));
    let info = url
        .into_connection_info()
        .map_err(bad_url)?
        .set_tcp_settings(super::transport::tcp());
    match (info.addr(), roots.certificates()) {
        (ConnectionAddr::TcpTls { .. }, Some(certificates)) => {
            redis::Client::build_with_tls(info, certificates.clone()).map_err(bad_url)
        }
        _ => redis::Client::open(info).map_err(bad_url),
    }
}

/// Whether a URL asks for TLS.
pub(super) fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_at_least_one_certificate() {
        assert!(Roots::from_pem(None).unwrap().certificates().is_none());
        for bad in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let error = Roots::from_pem(Some(bad)).err().expect("refused");
            assert!(error.to_string().contains("tls_ca"), "{error}");
        }
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(Roots::from_pem(Some(broken)).is_err());
    }

    #[test]
    fn ring_is_the_only_crypto_provider_built() {
        // Two providers in one binary make rustls refuse to pick one (and
        // code that asks it to, panic); `aws-lc-rs` must never be resolved.
        let lock = include_str!("../../../Cargo.lock");
        for name in ["aws-lc-rs", "aws-lc-sys"] {
            assert!(
                !lock.contains(&format!("name = \"{name}\"")),
                "{name} is in Cargo.lock: a dependency turned on rustls' default provider"
            );
        }
        use_ring();
        let provider = rustls::crypto::CryptoProvider::get_default().expect("a default provider");
        assert!(
            provider.cipher_suites.iter().all(|suite| {
                rustls::crypto::ring::default_provider()
                    .cipher_suites
                    .contains(suite)
            }),
            "the default provider is ring's"
        );
    }
}
