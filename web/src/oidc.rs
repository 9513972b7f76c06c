//! OpenID Connect sign-in for the dashboard: authorization code flow with
//! PKCE (S256), `state` and `nonce`, provider found by discovery. The role
//! comes from a configurable claim of the verified ID token.

use base64::Engine;
use gkm_store::model::Role;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::session::{Login, PendingOidc, User};

/// What the operator configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (none for a public client; PKCE protects the code).
    pub client_secret: Option<String>,
    /// This server's callback URL, `<public url>/login/oidc/callback`.
    pub redirect_url: String,
    /// The ID token claim that carries the role: a dotted path (for
    /// example `gkm_role` or `realm_access.roles`) to a string or an array
    /// of strings; `viewer`, `operator` and `admin` are recognised and
    /// the highest present wins.
    pub role_claim: String,
}

/// Why an OIDC sign-in failed (shown to the user; no secret in it).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The configuration is not usable.
    #[error("OIDC configuration: {0}")]
    Config(String),
    /// Discovery failed.
    #[error("cannot discover the identity provider at {issuer}: {detail}")]
    Discovery {
        /// The issuer.
        issuer: String,
        /// What failed.
        detail: String,
    },
    /// The callback does not belong to the login this browser started.
    #[error("the sign-in response does not match this browser's sign-in (state); start again")]
    State,
    /// The provider returned an error.
    #[error("the identity provider refused: {0}")]
    Provider(String),
    /// Exchanging the code failed.
    #[error("exchanging the authorization code failed: {0}")]
    Exchange(String),
    /// The ID token did not verify.
    #[error("the ID token did not verify: {0}")]
    IdToken(String),
    /// The token carried no recognised role.
    #[error("no GKM role for {user}: the ID token's claim {claim:?} names none of viewer, operator, admin")]
    NoRole {
        /// Who.
        user: String,
        /// The claim looked at.
        claim: String,
    },
}

/// An OIDC relying party (discovery is done on first use and kept).
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    metadata: OnceCell<CoreProviderMetadata>,
}

impl Oidc {
    /// A relying party for `config`; nothing is fetched yet, so the server
    /// starts while the provider is down.
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        IssuerUrl::new(config.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        if config.client_id.is_empty() {
            return Err(OidcError::Config("the client id is empty".into()));
        }
        if config.role_claim.is_empty() {
            return Err(OidcError::Config("the role claim is empty".into()));
        }
        // The provider must not redirect its token or discovery answers
        // elsewhere (SSRF); a slow provider must not hold a request forever.
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Self {
            config,
            http,
            metadata: OnceCell::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    async fn client(
        &self,
    ) -> Result<
        openidconnect::core::CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let issuer = &self.config.issuer;
        let meta = self
            .metadata
            .get_or_try_init(|| async {
                let url = IssuerUrl::new(issuer.clone())
                    .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
                CoreProviderMetadata::discover_async(url, &self.http)
                    .await
                    .map_err(|e| OidcError::Discovery {
                        issuer: issuer.clone(),
                        detail: error_chain(&e),
                    })
            })
            .await?;
        let redirect = RedirectUrl::new(self.config.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            meta.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: the URL to send the browser to, and what the
    /// session must keep for the callback.
    pub async fn begin(&self) -> Result<(String, PendingOidc), OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            PendingOidc {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Finishes a sign-in from the callback's `code` and `state`.
    pub async fn finish(
        &self,
        pending: &PendingOidc,
        code: &str,
        state: &str,
    ) -> Result<User, OidcError> {
        if !crate::session::same_token(&pending.state, state) {
            return Err(OidcError::State);
        }
        let client = self.client().await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::IdToken("the provider returned no ID token".into()))?;
        let claims = id_token
            .claims(
                &client.id_token_verifier(),
                &Nonce::new(pending.nonce.clone()),
            )
            .map_err(|e| OidcError::IdToken(e.to_string()))?;
        let name = claims
            .preferred_username()
            .map(|u| u.to_string())
            .or_else(|| claims.email().map(|e| e.to_string()))
            .unwrap_or_else(|| claims.subject().to_string());
        // The token verified above (signature, issuer, audience, expiry,
        // nonce); its payload is read again only for the role claim, which
        // the typed claims do not carry.
        let payload = payload_of(&id_token.to_string())
            .ok_or_else(|| OidcError::IdToken("unreadable payload".into()))?;
        let role = role_from_claims(&payload, &self.config.role_claim).ok_or_else(|| {
            OidcError::NoRole {
                user: name.clone(),
                claim: self.config.role_claim.clone(),
            }
        })?;
        Ok(User {
            name,
            role,
            login: Login::Oidc {
                issuer: claims.issuer().to_string(),
                subject: claims.subject().to_string(),
            },
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The JSON payload of a compact JWS.
fn payload_of(jws: &str) -> Option<Value> {
    let p = jws.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// The highest GKM role named by the claim at dotted `path` (a string or
/// an array of strings); unknown values are ignored, and so is `agent`
/// (a role for agents' API tokens, not for people).
pub fn role_from_claims(claims: &Value, path: &str) -> Option<Role> {
    let v = path.split('.').try_fold(claims, |v, k| v.get(k))?;
    let words: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .filter_map(Role::parse)
        .filter(|r| *r >= Role::Viewer)
        .max()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_mapping() {
        let c = json!({"gkm_role": "operator", "groups": ["viewer", "admin", "x"],
                       "realm_access": {"roles": ["offline", "viewer"]}, "n": 3});
        assert_eq!(role_from_claims(&c, "gkm_role"), Some(Role::Operator));
        assert_eq!(role_from_claims(&c, "groups"), Some(Role::Admin));
        assert_eq!(
            role_from_claims(&c, "realm_access.roles"),
            Some(Role::Viewer)
        );
        assert_eq!(role_from_claims(&c, "missing"), None);
        assert_eq!(role_from_claims(&c, "n"), None);
        assert_eq!(
            role_from_claims(&json!({"r": "Admin"}), "r"),
            None,
            "case matters"
        );
        assert_eq!(role_from_claims(&json!({"r": []}), "r"), None);
    }

    #[test]
    fn payload_of_a_jws() {
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"gkm_role":"admin"}"#);
        let v = payload_of(&format!("e30.{body}.sig")).unwrap();
        assert_eq!(role_from_claims(&v, "gkm_role"), Some(Role::Admin));
        assert!(payload_of("nodots").is_none());
        assert!(payload_of("a.!!!.c").is_none());
    }

    #[test]
    fn bad_configuration_is_refused() {
        let good = OidcConfig {
            issuer: "http://127.0.0.1:9/".into(),
            client_id: "gkm".into(),
            client_secret: None,
            redirect_url: "http://127.0.0.1:8080/login/oidc/callback".into(),
            role_claim: "gkm_role".into(),
        };
        assert!(Oidc::new(good.clone()).is_ok());
        for bad in [
            OidcConfig {
                issuer: "not a url".into(),
                ..good.clone()
            },
            OidcConfig {
                redirect_url: "/relative".into(),
                ..good.clone()
            },
            OidcConfig {
                client_id: String::new(),
                ..good.clone()
            },
            OidcConfig {
                role_claim: String::new(),
                ..good.clone()
            },
        ] {
            assert!(matches!(Oidc::new(bad), Err(OidcError::Config(_))));
        }
    }
}
