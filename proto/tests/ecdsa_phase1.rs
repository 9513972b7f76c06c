//! Phase 1 with ECDSA-256 signatures (RFC 4754, authentication method 9):
//! GMs and key servers holding P-256 certificates register next to RSA
//! ones; a stolen certificate without its key, a certificate from another
//! CA, a certificate whose key is not of the negotiated kind and a key
//! server the GM's CA did not certify are each refused. The certificates
//! are made for each run by a P-256 CA (rcgen), as the controller's
//! internal CA makes them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::net::SocketAddr;

use common::*;
use gkm_proto::crypto::{certificates_from_pem, CertificateAuthority, KeyKind, Phase1Signer};
use gkm_proto::gm::{CertAuth, GmAuth, GmEvent, GmFailure, GmIdentity, GroupMember};
use gkm_proto::ks::{Authorization, EnrolledAgents, GroupAuth, KeyServer, KsEvent, Reject};
use gkm_wire::consts::NotifyType;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

/// A P-256 CA that issues certificates as the controller's does.
struct EcCa {
    der: Vec<u8>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl EcCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate for `cn` and its P-256 key (PKCS#8 DER).
    fn issue(&self, cn: &str) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = self.issue_rcgen(cn);
        (cert.der().to_vec(), key.serialize_der())
    }

    /// [`EcCa::issue`] as PEM documents.
    fn issue_pem(&self, cn: &str) -> (String, String) {
        let (cert, key) = self.issue_rcgen(cn);
        (cert.pem(), key.serialize_pem())
    }

    fn issue_rcgen(&self, cn: &str) -> (rcgen::Certificate, KeyPair) {
        self.issue_ou(cn, None)
    }

    /// With an OU (the group binding the controller's CA writes).
    fn issue_ou(&self, cn: &str, ou: Option<&str>) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        // The DNS name is the CN, as enrolled agents' certificates have it.
        let mut p = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "GKM test");
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        (p.signed_by(&key, &self.issuer).unwrap(), key)
    }

    fn authority(&self) -> CertificateAuthority {
        CertificateAuthority::new(std::slice::from_ref(&self.der)).unwrap()
    }
}

/// A certificate-group KS trusting `cas`, holding the test RSA
/// certificate and a P-256 one from `ca`.
fn ks_with(ca: &EcCa, cas: &[Vec<u8>]) -> KeyServer {
    let mut cfg = ks_config(b"unused", Authorization::default());
    cfg.groups[0].authentication = GroupAuth::Certificate;
    cfg.ca = Some(CertificateAuthority::new(cas).unwrap());
    let (cert, key) = ca.issue("ks1.ecdsa.test");
    cfg.certificates = vec![
        (
            certificates_from_pem(include_str!("data/ks.pem"))
                .unwrap()
                .remove(0),
            Phase1Signer::from_pkcs8_pem(include_str!("data/ks.key")).unwrap(),
        ),
        (cert, Phase1Signer::from_pkcs8_der(&key).unwrap()),
    ];
    KeyServer::new(cfg, rng(2))
}

/// Both CAs: the RSA test CA and `ca`.
fn both(ca: &EcCa) -> Vec<Vec<u8>> {
    let mut v = certificates_from_pem(include_str!("data/ca.pem")).unwrap();
    v.push(ca.der.clone());
    v
}

/// A GM presenting `cert` and signing with `key`, trusting `trust`.
fn gm(i: u32, cert: Vec<u8>, key: Phase1Signer, trust: CertificateAuthority) -> GroupMember {
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let dn = parsed.subject().as_raw().to_vec();
    let auth = GmAuth::Certificate(Box::new(CertAuth {
        cert,
        key,
        ca: trust,
    }));
    GroupMember::new(
        base_config(i, GROUP, GmIdentity::Dn(dn), auth),
        rng(3000 + u64::from(i)),
    )
}

fn ec_gm(i: u32, ca: &EcCa, cn: &str) -> GroupMember {
    let (cert, key) = ca.issue(cn);
    gm(
        i,
        cert,
        Phase1Signer::from_pkcs8_der(&key).unwrap(),
        ca.authority(),
    )
}

fn refused(ev: &[KsEvent], reason: Reject) -> Option<String> {
    ev.iter().find_map(|e| match e {
        KsEvent::Rejected {
            reason: r, detail, ..
        } if *r == reason => Some(detail.clone().unwrap_or_default()),
        _ => None,
    })
}

fn notified(events: &[(SocketAddr, GmEvent)], n: NotifyType) -> bool {
    events.iter().any(
        |(_, e)| matches!(e, GmEvent::AttemptFailed { reason: GmFailure::Notified(x), .. } if *x == n),
    )
}

#[test]
fn ecdsa_and_rsa_gms_register_to_one_key_server() {
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    let rsa_trust = CertificateAuthority::new(&both(&ca)).unwrap();
    let ec = ec_gm(1, &ca, "gm1.ecdsa.test");
    let rsa = gm(
        2,
        certificates_from_pem(include_str!("data/gm.pem"))
            .unwrap()
            .remove(0),
        Phase1Signer::from_pkcs8_pem(include_str!("data/gm.key")).unwrap(),
        rsa_trust,
    );
    let mut gms = vec![(gm_addr(1), ec), (gm_addr(2), rsa)];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 5_000);
    assert_eq!(got.len(), 2, "{ev:?}");
    for keys in got.values() {
        assert_eq!(keys, &ks.groups()[0].keys);
    }
    // Each phase 1 was made with its own method: the ECDSA GM's with
    // ECDSA-256, the RSA GM's with RSA signatures.
    let methods: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            KsEvent::Phase1Established { method, .. } => Some(*method),
            _ => None,
        })
        .collect();
    assert!(
        methods.contains(&gkm_proto::ike::AuthKind::Signature(KeyKind::EcdsaP256))
            && methods.contains(&gkm_proto::ike::AuthKind::Signature(KeyKind::Rsa)),
        "{methods:?}"
    );
}

#[test]
fn a_stolen_certificate_without_its_key_does_not_verify() {
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    let (cert, _) = ca.issue("gm1.ecdsa.test");
    // The attacker has the certificate and signs with a key of its own.
    let forger =
        Phase1Signer::from_pkcs8_der(&Phase1Signer::generate_ecdsa_p256_pkcs8().unwrap()).unwrap();
    let mut gms = vec![(gm_addr(1), gm(1, cert, forger, ca.authority()))];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty());
    let detail = refused(&ev, Reject::AuthenticationFailed).expect("refused");
    assert_eq!(
        detail,
        "main mode 5 SIG does not verify with the certificate's key"
    );
    assert!(notified(&gm_ev, NotifyType::AUTHENTICATION_FAILED));
    assert_eq!(ks.half_open_count(), 0);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let ca = EcCa::new("GKM test EC CA");
    let rogue = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    // Same CA name, same subject: only the signature tells them apart.
    let mut gms = vec![(gm_addr(1), ec_gm(1, &rogue, "gm1.ecdsa.test"))];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty());
    let detail = refused(&ev, Reject::InvalidCertificate).expect("refused");
    assert!(
        detail.starts_with("main mode 5 CERT: the certificate is not trusted: "),
        "{detail}"
    );
    assert!(notified(&gm_ev, NotifyType::INVALID_CERTIFICATE));
}

#[test]
fn a_certificate_whose_key_is_not_the_negotiated_kind_is_refused() {
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    // An RSA certificate from a trusted CA, presented under ECDSA-256 (the
    // GM signs with a P-256 key, so it offers method 9).
    let rsa_cert = certificates_from_pem(include_str!("data/gm.pem"))
        .unwrap()
        .remove(0);
    let ec_key =
        Phase1Signer::from_pkcs8_der(&Phase1Signer::generate_ecdsa_p256_pkcs8().unwrap()).unwrap();
    let mut gms = vec![(gm_addr(1), gm(1, rsa_cert, ec_key, ca.authority()))];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty());
    let detail = refused(&ev, Reject::InvalidCertificate).expect("refused");
    assert_eq!(
        detail,
        "main mode 5 CERT holds a RSA key but ECDSA P-256 signatures were negotiated"
    );
}

#[test]
fn a_gm_refuses_a_key_server_its_ca_did_not_certify() {
    let ca = EcCa::new("GKM test EC CA");
    let other = EcCa::new("another CA");
    // The KS trusts the GM's CA, but its own P-256 certificate is from `ca`
    // while the GM trusts only `other` (which also issued the GM's).
    let mut anchors = both(&ca);
    anchors.push(other.der.clone());
    let mut ks = ks_with(&ca, &anchors);
    let mut gms = vec![(gm_addr(1), ec_gm(1, &other, "gm1.ecdsa.test"))];
    let (got, _, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty());
    assert!(
        gm_ev.iter().any(|(_, e)| matches!(
            e,
            GmEvent::AttemptFailed {
                reason: GmFailure::BadResponse("main mode 6 does not authenticate the responder"),
                ..
            }
        )),
        "{gm_ev:?}"
    );
}

#[test]
fn a_key_server_without_a_p256_certificate_does_not_choose_ecdsa() {
    let ca = EcCa::new("GKM test EC CA");
    // Only the RSA certificate: an ECDSA-only offer finds no proposal.
    let mut ks = ks_with_pki();
    let mut gms = vec![(gm_addr(1), ec_gm(1, &ca, "gm1.ecdsa.test"))];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 2_000);
    assert!(got.is_empty());
    assert!(refused(&ev, Reject::NoProposal).is_some(), "{ev:?}");
    assert!(notified(&gm_ev, NotifyType::NO_PROPOSAL_CHOSEN));
}

#[test]
fn configured_credentials_take_a_p256_key_only_with_its_own_certificate() {
    use gkm_proto::crypto::{PkiCredentials, PkiLoadError};
    let ca = EcCa::new("GKM test EC CA");
    let (cert_pem, key_pem) = ca.issue_pem("ks1.ecdsa.test");
    let (_, other_key) = ca.issue_pem("ks2.ecdsa.test");
    let ca_pem = &ca.pem;
    let ok = PkiCredentials::from_pem(ca_pem, &cert_pem, &key_pem).unwrap();
    assert_eq!(ok.key.kind(), KeyKind::EcdsaP256);
    let wrong = PkiCredentials::from_pem(ca_pem, &cert_pem, &other_key);
    assert!(matches!(wrong, Err(PkiLoadError::KeyMismatch)));
    assert_eq!(
        wrong.err().map(|e| e.to_string()).unwrap_or_default(),
        "pki.key: the key is not the one pki.cert certifies"
    );
    // The RSA key of the test fixtures under the P-256 certificate: refused too.
    let rsa = PkiCredentials::from_pem(ca_pem, &cert_pem, include_str!("data/gm.key"));
    assert!(matches!(rsa, Err(PkiLoadError::KeyMismatch)));
}

/// A GM registering under ID_FQDN `id` with a certificate for `cn`.
fn fqdn_gm(i: u32, ca: &EcCa, cn: &str, id: &str) -> GroupMember {
    let (cert, key) = ca.issue(cn);
    let auth = GmAuth::Certificate(Box::new(CertAuth {
        cert,
        key: Phase1Signer::from_pkcs8_der(&key).unwrap(),
        ca: ca.authority(),
    }));
    GroupMember::new(
        base_config(i, GROUP, GmIdentity::Fqdn(id.into()), auth),
        rng(4000 + u64::from(i)),
    )
}

#[test]
fn an_fqdn_identity_must_be_the_certificates_name_and_a_revoked_name_is_refused() {
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    let mut gms = vec![
        (
            gm_addr(1),
            fqdn_gm(1, &ca, "gm1.branch.test", "gm1.branch.test"),
        ),
        (
            gm_addr(2),
            fqdn_gm(2, &ca, "gm2.branch.test", "gm9.branch.test"),
        ),
    ];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&gm_addr(1)], "{ev:?}");
    let registered: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            KsEvent::Registered(r) => Some(r.gm_identity.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(registered, ["gm1.branch.test"]);
    let detail = refused(&ev, Reject::InvalidCertificate).expect("refused");
    assert!(
        detail.starts_with("main mode 5 ID gm9.branch.test is neither"),
        "{detail}"
    );
    // Revoked: the next phase 1 of that name is refused, others go on.
    ks.set_enrolled_agents(EnrolledAgents {
        groups: [("gm4.branch.test".to_owned(), vec![GROUP])].into(),
        revoked: ["gm1.branch.test".to_owned()].into(),
    });
    let mut gms = vec![
        (
            gm_addr(3),
            fqdn_gm(3, &ca, "gm1.branch.test", "gm1.branch.test"),
        ),
        (
            gm_addr(4),
            fqdn_gm(4, &ca, "gm4.branch.test", "gm4.branch.test"),
        ),
    ];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&gm_addr(4)], "{ev:?}");
    assert_eq!(
        refused(&ev, Reject::InvalidCertificate).as_deref(),
        Some("main mode 5 CERT: agent \"gm1.branch.test\" is revoked")
    );
    assert!(notified(&gm_ev, NotifyType::INVALID_CERTIFICATE));
}

#[test]
fn an_enrolled_agents_certificate_joins_only_its_groups() {
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    ks.set_enrolled_agents(EnrolledAgents {
        groups: [
            ("gm1.branch.test".to_owned(), vec![GROUP + 1]),
            ("gm2.branch.test".to_owned(), vec![GROUP + 1, GROUP]),
        ]
        .into(),
        revoked: Default::default(),
    });
    // gm1 is enrolled for another group only: its DN identity does not
    // get it around the binding either.
    let (cert, key) = ca.issue("gm1.branch.test");
    let dn_gm = gm(
        1,
        cert,
        Phase1Signer::from_pkcs8_der(&key).unwrap(),
        ca.authority(),
    );
    let mut gms = vec![
        (gm_addr(1), dn_gm),
        (
            gm_addr(2),
            fqdn_gm(2, &ca, "gm2.branch.test", "gm2.branch.test"),
        ),
    ];
    let (got, ev, gm_ev) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&gm_addr(2)], "{ev:?}");
    assert!(
        refused(&ev, Reject::CredentialNotAccepted).is_some_and(|d| d
            == format!(
                "the certificate's enrolled agent may join groups [{}] only, not {GROUP}",
                GROUP + 1
            )),
        "{ev:?}"
    );
    assert!(notified(&gm_ev, NotifyType::INVALID_ID_INFORMATION));
}

#[test]
fn a_renewed_certificate_is_used_at_the_next_phase_1() {
    let ca = EcCa::new("GKM test EC CA");
    let rogue = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    // Its first certificate is one the key server does not trust...
    let (old, old_key) = rogue.issue("gm1.branch.test");
    let mut g = gm(
        1,
        old,
        Phase1Signer::from_pkcs8_der(&old_key).unwrap(),
        ca.authority(),
    );
    let mut gms = vec![(gm_addr(1), g)];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 2_000);
    assert!(got.is_empty());
    // ... then it is renewed, and the next attempt registers with it.
    g = gms.remove(0).1;
    let (cert, key) = ca.issue("gm1.branch.test");
    assert!(g.set_certificate(CertAuth {
        cert,
        key: Phase1Signer::from_pkcs8_der(&key).unwrap(),
        ca: ca.authority(),
    }));
    let mut gms = vec![(gm_addr(1), g)];
    let (got, ev, _) = run_with(&mut ks, &mut gms, T0 + 2_000, T0 + 8_000, |_, _| true);
    assert_eq!(got.len(), 1, "{ev:?}");
}

#[test]
fn a_certificates_own_group_binding_holds_on_a_key_server_that_never_enrolled_it() {
    // A key server whose store knows no agent (another key server of the
    // group enrolled it): the binding the CA wrote decides.
    let ca = EcCa::new("GKM test EC CA");
    let mut ks = ks_with(&ca, &both(&ca));
    let with_ou = |i: u32, ou: &str| {
        let (cert, key) = ca.issue_ou("gm1.branch.test", Some(ou));
        gm(
            i,
            cert.der().to_vec(),
            Phase1Signer::from_pkcs8_der(&key.serialize_der()).unwrap(),
            ca.authority(),
        )
    };
    let elsewhere = format!("{}{}", gkm_proto::crypto::GROUPS_OU_PREFIX, GROUP + 1);
    let here = format!(
        "{}{},{}",
        gkm_proto::crypto::GROUPS_OU_PREFIX,
        GROUP + 1,
        GROUP
    );
    let garbled = format!("{}12x", gkm_proto::crypto::GROUPS_OU_PREFIX);
    let mut gms = vec![
        (gm_addr(1), with_ou(1, &elsewhere)),
        (gm_addr(2), with_ou(2, &here)),
        (gm_addr(3), with_ou(3, &garbled)),
    ];
    let (got, ev, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&gm_addr(2)], "{ev:?}");
    let refusals = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                KsEvent::Rejected {
                    reason: Reject::CredentialNotAccepted,
                    ..
                }
            )
        })
        .count();
    assert!(refusals >= 2, "{ev:?}");
    // Where the store knows the agent too, a group must be in both.
    ks.set_enrolled_agents(EnrolledAgents {
        groups: [("gm1.branch.test".to_owned(), vec![GROUP + 1])].into(),
        revoked: Default::default(),
    });
    let mut gms = vec![(gm_addr(4), with_ou(4, &here))];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 3_000);
    assert!(got.is_empty(), "the store's binding excludes the group");
}
