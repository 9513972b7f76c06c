//! Main mode message 5 (RFC 2409 section 5): which key opens it, and
//! whether the initiator is who its ID payload says. With pre-shared keys
//! each candidate PSK for the source is tried (groups may share source
//! ranges); with signatures the certificate must chain to the CA, name
//! the peer, and sign HASH_I. Pure functions: the responder's state stays
//! with the responder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gkm_wire::consts::{CertEncoding, Flags, NotifyType, PayloadType};
use gkm_wire::payload::{Cert, Hash, IdPayload, SaLayout, Signature};
use gkm_wire::{Identity, IsakmpHeader, Payload};

use super::super::config::{Credential, EnrolledAgents, PskEntry};
use super::super::events::Reject;
use crate::crypto::{CertificateAuthority, EngineRng, Phase1Signer};
use crate::engine::{Millis, PeerVendor};
use crate::ike::{
    decrypt_message, encrypt_body, AuthKind, Decrypted, Phase1Keys, Suite, Transcript,
};

/// What [`verify`] found: the certificate's subject (DER), and the groups
/// it may join when it belongs to an enrolled agent (the store's binding,
/// the certificate's own, or where both exist the groups in both).
pub(crate) type Verified = (Option<Vec<u8>>, Option<Vec<u32>>);

/// What main mode has agreed before message 5: enough to derive the keys
/// for a given PSK (or none, with signatures) and check HASH_I.
pub(crate) struct Agreed<'a> {
    /// The suite.
    pub suite: Suite,
    /// g^xy.
    pub gxy: &'a [u8],
    /// The transcript HASH_I and HASH_R cover.
    pub transcript: Transcript<'a>,
    /// Ni_b and Nr_b.
    pub nonces: (&'a [u8], &'a [u8]),
    /// The IV of message 5.
    pub iv: &'a [u8; 16],
}

impl Agreed<'_> {
    fn derive(&self, psk: Option<&[u8]>) -> Phase1Keys {
        let t = &self.transcript;
        Phase1Keys::derive(
            &self.suite,
            psk,
            self.nonces.0,
            self.nonces.1,
            self.gxy,
            t.cky_i,
            t.cky_r,
        )
    }
}

/// Message 5 opened: the keys that opened it, the plaintext, and what
/// authenticated the peer (checked by [`verify`]).
pub(crate) struct Opened {
    /// Phase 1 keys.
    pub keys: Phase1Keys,
    /// The decrypted message.
    pub dec: Decrypted,
    /// The credentials whose key opened it (several only when groups
    /// share a PSK); the certificate for signatures.
    pub credentials: Vec<Credential>,
}

/// Finds the key that opens message 5: the one PSK among `candidates`
/// (distinct keys tried once each) whose keys decrypt it to a chain with
/// an ID payload and a HASH_I that verifies; with signatures, the one
/// key set. The notification to send when none does.
pub(crate) fn open(
    agreed: &Agreed<'_>,
    candidates: &[&PskEntry],
    data: &[u8],
) -> Result<Opened, NotifyType> {
    let suite = agreed.suite;
    if suite.auth.is_signature() {
        let keys = agreed.derive(None);
        return decrypt_message(data, suite.cipher, &keys.enc_key, agreed.iv)
            .map(|dec| Opened {
                keys,
                dec,
                credentials: vec![Credential::Certificate],
            })
            .map_err(|_| NotifyType::AUTHENTICATION_FAILED);
    }
    let mut missing_id = false;
    for (i, entry) in candidates.iter().enumerate() {
        if candidates
            .get(..i)
            .is_some_and(|before| before.iter().any(|e| e.key == entry.key))
        {
            continue;
        }
        let keys = agreed.derive(Some(&entry.key));
        let Ok(dec) = decrypt_message(data, suite.cipher, &keys.enc_key, agreed.iv) else {
            continue;
        };
        let (mut idii_b, mut hash) = (None, None);
        for r in gkm_wire::payload::PayloadIter::new(dec.header.next_payload, &dec.plaintext)
            .filter_map(Result::ok)
        {
            match r.payload_type {
                PayloadType::ID => idii_b = Some(r.body),
                PayloadType::HASH => hash = Some(r.body),
                _ => {}
            }
        }
        let Some(idii_b) = idii_b else {
            missing_id = true;
            continue;
        };
        if hash.is_some_and(|h| keys.verify_hash_i(suite.prf, &agreed.transcript, idii_b, h)) {
            let credentials = candidates
                .iter()
                .filter(|e| e.key == entry.key)
                .map(|e| e.credential)
                .collect();
            return Ok(Opened {
                keys,
                dec,
                credentials,
            });
        }
    }
    Err(if missing_id {
        NotifyType::INVALID_ID_INFORMATION
    } else {
        NotifyType::AUTHENTICATION_FAILED
    })
}

/// The initiator's payloads in message 5.
pub(crate) struct Initiator<'a> {
    /// The ID payload's body, as HASH_I covers it.
    pub idii_b: &'a [u8],
    /// The ID payload.
    pub idii: IdPayload<'a>,
    hash: Option<&'a [u8]>,
    sig: Option<&'a [u8]>,
    cert: Option<&'a [u8]>,
    /// It sent INITIAL-CONTACT.
    pub initial_contact: bool,
}

/// Reads the initiator's payloads (its Vendor IDs into `vendor`); the
/// notification to send when there is no ID payload.
pub(crate) fn initiator<'a>(
    dec: &'a Decrypted,
    vendor: &mut PeerVendor,
) -> Result<Initiator<'a>, NotifyType> {
    let mut id: Option<(&[u8], IdPayload<'_>)> = None;
    let (mut hash, mut sig, mut cert, mut initial_contact) = (None, None, None, false);
    for r in gkm_wire::payload::PayloadIter::new(dec.header.next_payload, &dec.plaintext)
        .filter_map(Result::ok)
    {
        match Payload::parse(r.payload_type, r.body, SaLayout::Phase1) {
            Ok(Payload::Id(i)) => id = Some((r.body, i)),
            Ok(Payload::Hash(h)) => hash = Some(h.0),
            Ok(Payload::Signature(s)) => sig = Some(s.0),
            Ok(Payload::Cert(c)) => cert = Some(c.data),
            Ok(Payload::Notification(n)) => {
                initial_contact |= n.notify_type == NotifyType::INITIAL_CONTACT
            }
            Ok(Payload::VendorId(v)) => vendor.observe(v.0),
            _ => {}
        }
    }
    let (idii_b, idii) = id.ok_or(NotifyType::INVALID_ID_INFORMATION)?;
    Ok(Initiator {
        idii_b,
        idii,
        hash,
        sig,
        cert,
        initial_contact,
    })
}

/// Whether the initiator proved who it is: HASH_I under the PSK's keys
/// (checked again on the ID payload that names the peer: the search in
/// [`open`] looked at raw payloads), or a certificate from `ca` naming
/// the peer whose key signed HASH_I. The refusal and notification when not.
pub(crate) fn verify(
    agreed: &Agreed<'_>,
    keys: &Phase1Keys,
    who: &Initiator<'_>,
    ca: Option<&CertificateAuthority>,
    agents: &EnrolledAgents,
    now: Millis,
    from: SocketAddr,
) -> Result<Verified, (Reject, NotifyType, Option<String>)> {
    let suite = agreed.suite;
    // A wrong PSK or HASH_I says only that: the cause is a secret.
    let failed = |detail: Option<&str>| {
        (
            Reject::AuthenticationFailed,
            NotifyType::AUTHENTICATION_FAILED,
            detail.map(str::to_owned),
        )
    };
    let mut subject = None;
    let mut agent_groups = None;
    let authentic = match suite.auth {
        AuthKind::Psk => who
            .hash
            .is_some_and(|h| keys.verify_hash_i(suite.prf, &agreed.transcript, who.idii_b, h)),
        AuthKind::Signature(kind) => {
            let (Some(ca), Some(cert), Some(sig)) = (ca, who.cert, who.sig) else {
                let missing = match (ca, who.cert, who.sig) {
                    (None, _, _) => "main mode 5: certificates are not configured here",
                    (_, None, _) => "main mode 5 has no CERT payload",
                    _ => "main mode 5 has no SIG payload",
                };
                return Err(failed(Some(missing)));
            };
            let verified = ca.verify(cert, now / 1000).map_err(|e| {
                (
                    Reject::InvalidCertificate,
                    NotifyType::INVALID_CERTIFICATE,
                    Some(format!("main mode 5 CERT: {e}")),
                )
            })?;
            let id_matches = match who.idii.identity {
                Identity::DerAsn1Dn(dn) => dn == verified.subject_der.as_slice(),
                Identity::Fqdn(name) => verified.names.iter().any(|n| n.as_bytes() == name),
                Identity::Ipv4Addr(a) => IpAddr::V4(a) == from.ip(),
                Identity::Ipv6Addr(a) => IpAddr::V6(a) == from.ip(),
                _ => false,
            };
            if let Some(name) = verified.names.iter().find(|n| agents.revoked.contains(*n)) {
                return Err((
                    Reject::InvalidCertificate,
                    NotifyType::INVALID_CERTIFICATE,
                    Some(format!(
                        "main mode 5 CERT: agent {:?} is revoked",
                        crate::identity::printable(name)
                    )),
                ));
            }
            if verified.key.kind() != kind {
                return Err((
                    Reject::InvalidCertificate,
                    NotifyType::INVALID_CERTIFICATE,
                    Some(format!(
                        "main mode 5 CERT holds a {} key but {} signatures were negotiated",
                        verified.key.kind().name(),
                        kind.name()
                    )),
                ));
            }
            if !id_matches {
                return Err((
                    Reject::InvalidCertificate,
                    NotifyType::INVALID_ID_INFORMATION,
                    Some(format!(
                        "main mode 5 ID {} is neither the certificate's subject or DNS name nor the source address {}",
                        crate::identity::identity_string(&who.idii.identity),
                        from.ip()
                    )),
                ));
            }
            if verified
                .key
                .verify(&keys.hash_i(suite.prf, &agreed.transcript, who.idii_b), sig)
                .is_err()
            {
                return Err(failed(Some(
                    "main mode 5 SIG does not verify with the certificate's key",
                )));
            }
            // The certificate's own binding and the store's, where both
            // exist: a group must be in each.
            agent_groups = match (agents.groups_of(&verified.names), verified.groups) {
                (Some(a), Some(c)) => Some(a.into_iter().filter(|g| c.contains(g)).collect()),
                (a, c) => a.or(c),
            };
            subject = Some(verified.subject_der);
            true
        }
    };
    if authentic {
        Ok((subject, agent_groups))
    } else {
        Err(failed(None))
    }
}

/// The KS's phase 1 identity to a peer at `peer`: its IPv6 address to an
/// IPv6 peer where it has one, its IPv4 address otherwise.
pub(crate) fn own_identity(peer: IpAddr, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> IpAddr {
    match (peer, v6) {
        (IpAddr::V6(_), Some(v6)) => IpAddr::V6(v6),
        _ => IpAddr::V4(v4),
    }
}

/// Main mode message 6: IDir, then HASH_R (PSK) or CERT and SIG_R
/// (signatures, with the certificate of the negotiated key kind),
/// encrypted; with the last CBC block (phase 2 IVs derive from it). None
/// when it cannot be made (no certificate of that kind to sign with).
pub(crate) fn message_6(
    agreed: &Agreed<'_>,
    opened: &Opened,
    who: &Initiator<'_>,
    identity: IpAddr,
    certificates: &[(Vec<u8>, Phase1Signer)],
    rng: &mut dyn EngineRng,
) -> Option<(Vec<u8>, [u8; 16])> {
    let suite = agreed.suite;
    let idir = IdPayload {
        protocol: who.idii.protocol,
        port: who.idii.port,
        identity: match identity {
            IpAddr::V4(a) => Identity::Ipv4Addr(a),
            IpAddr::V6(a) => Identity::Ipv6Addr(a),
        },
    };
    let mut idir_b = Vec::new();
    idir.emit(&mut idir_b).ok()?;
    let hash_r = opened.keys.hash_r(suite.prf, &agreed.transcript, &idir_b);
    let mut payloads = vec![Payload::Id(idir)];
    let sig_r;
    match suite.auth {
        AuthKind::Psk => payloads.push(Payload::Hash(Hash(&hash_r))),
        AuthKind::Signature(kind) => {
            let (cert_der, signer) = certificates.iter().find(|(_, k)| k.kind() == kind)?;
            sig_r = signer.sign(rng, &hash_r).ok()?;
            payloads.push(Payload::Cert(Cert {
                encoding: CertEncoding::X509_SIGNATURE,
                data: cert_der,
            }));
            payloads.push(Payload::Signature(Signature(&sig_r)));
        }
    }
    let mut body = Vec::new();
    let first = gkm_wire::payload::emit_chain(&payloads, &mut body).ok()?;
    let header = IsakmpHeader {
        flags: Flags::default(),
        message_id: 0,
        next_payload: first,
        ..opened.dec.header
    };
    encrypt_body(
        header,
        body,
        suite.cipher,
        &opened.keys.enc_key,
        &opened.dec.next_iv,
    )
    .ok()
}

#[cfg(test)]
mod own_identity_tests {
    use super::*;

    #[test]
    fn an_ipv6_peer_gets_the_ipv6_identity_where_there_is_one() {
        let v4 = Ipv4Addr::new(10, 0, 0, 1);
        let v6: Ipv6Addr = "fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST);
        let p6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let p4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(own_identity(p6, v4, Some(v6)), IpAddr::V6(v6));
        assert_eq!(own_identity(p6, v4, None), IpAddr::V4(v4));
        assert_eq!(own_identity(p4, v4, Some(v6)), IpAddr::V4(v4));
    }
}
