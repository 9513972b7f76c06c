//! What a client of the controller's REST API trusts: `gkmctl --ca` and the
//! agent's `report.ca` both name a private CA's PEM file, and both turn it
//! into ureq root certificates here, with the same refusals.

use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

/// TLS settings that trust exactly the certificates in `pem` (a private
/// CA), instead of the public web PKI roots. A PEM that does not parse, or
/// holds no certificate, is an error saying which.
pub fn private_ca_tls(pem: &[u8]) -> Result<TlsConfig, String> {
    let mut certs = Vec::new();
    for item in parse_pem(pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| e.to_string())? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_a_certificate_is_refused() {
        assert_eq!(
            private_ca_tls(b"").unwrap_err(),
            "no certificate in it".to_owned()
        );
        let key_only =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            private_ca_tls(key_only).unwrap_err(),
            "no certificate in it"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(private_ca_tls(broken).is_err());
    }
}
