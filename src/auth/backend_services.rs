//! SMART Backend Services (`client_credentials` with a `private_key_jwt` client assertion):
//! a registered client signs a short-lived JWT with its own key, the server checks it against the
//! client's registered JWKS and answers with an access token for the requested scopes it may have.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::Authenticator;
use super::scopes::{Scope, parse_scope};
use super::token::{TokenRequest, issue};
use crate::fhir::instant::now_micros;
use crate::store::AnyConnection;
use crate::store::clients;

/// Access tokens issued here live five minutes (the SMART recommendation).
pub const TOKEN_LIFETIME_SECONDS: i64 = 300;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth 2.0 error (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            description: description.into(),
        }
    }

    /// 401 for a client that could not be authenticated, else 400.
    pub fn status(&self) -> u16 {
        if self.error == "invalid_client" {
            401
        } else {
            400
        }
    }
}

/// A granted access token.
#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: String,
    pub scope: String,
    pub expires_in: i64,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    jti: String,
    exp: i64,
}

/// Exchanges a client assertion for an access token. `token_url` is this endpoint's URL, the
/// audience the assertion must name.
pub fn exchange(
    conn: &mut AnyConnection,
    auth: &Authenticator,
    token_url: &str,
    form: &HashMap<String, String>,
) -> Result<Granted, OAuthError> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "only client_credentials is supported",
        ));
    }
    if field("client_assertion_type") != ASSERTION_TYPE {
        return Err(OAuthError::new(
            "invalid_request",
            format!("client_assertion_type must be {ASSERTION_TYPE}"),
        ));
    }
    let assertion = field("client_assertion");
    let header = decode_header(assertion)
        .map_err(|_| OAuthError::new("invalid_client", "the client assertion is not a JWT"))?;
    if !matches!(
        header.alg,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::RS256 | Algorithm::RS384
    ) {
        return Err(OAuthError::new(
            "invalid_client",
            "the client assertion must be signed with ES256, ES384, RS256 or RS384",
        ));
    }
    // Who claims to be calling decides which keys may have signed; nothing is trusted until then.
    let claimed: AssertionClaims = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| {
            OAuthError::new(
                "invalid_client",
                "the client assertion lacks iss, sub, jti or exp",
            )
        })?;
    let client = clients::find(conn, &claimed.iss)
        .map_err(|_| OAuthError::new("temporarily_unavailable", "try again"))?
        .ok_or_else(|| OAuthError::new("invalid_client", "unknown client"))?;
    let keys: JwkSet = serde_json::from_str(&client.jwks).map_err(|_| {
        OAuthError::new("invalid_client", "the client's registered JWKS is unusable")
    })?;
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| {
        OAuthError::new(
            "invalid_client",
            "no registered key matches the assertion's kid",
        )
    })?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| OAuthError::new("invalid_client", "the registered key is unusable"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[client.client_id.as_str()]);
    validation.set_audience(&[token_url]);
    validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "jti"]);
    validation.leeway = 30;
    let verified = decode::<AssertionClaims>(assertion, &key, &validation).map_err(|err| {
        OAuthError::new(
            "invalid_client",
            format!("the client assertion is not valid: {err}"),
        )
    })?;
    let claims = verified.claims;
    let now = now_micros() / 1_000_000;
    if claims.sub != client.client_id || claims.jti.is_empty() {
        return Err(OAuthError::new(
            "invalid_client",
            "sub must equal iss (the client id) and jti must be set",
        ));
    }
    if claims.exp > now + 300 + 30 {
        return Err(OAuthError::new(
            "invalid_client",
            "the client assertion may not be valid for more than five minutes",
        ));
    }
    let fresh = clients::use_assertion(conn, &client.client_id, &claims.jti, claims.exp, now)
        .map_err(|_| OAuthError::new("temporarily_unavailable", "try again"))?;
    if !fresh {
        return Err(OAuthError::new(
            "invalid_client",
            "this client assertion (jti) was used before",
        ));
    }
    let registered: Vec<Scope> = client
        .scope
        .split_whitespace()
        .filter_map(parse_scope)
        .collect();
    let granted: Vec<&str> = field("scope")
        .split_whitespace()
        .filter(|requested| {
            parse_scope(requested).is_some_and(|r| registered.iter().any(|g| covers(g, &r)))
        })
        .collect();
    if granted.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "none of the requested scopes is registered for this client",
        ));
    }
    let scope = granted.join(" ");
    let key = auth.key.as_ref().ok_or_else(|| {
        OAuthError::new(
            "unsupported_grant_type",
            "this server does not issue tokens (--auth is not local)",
        )
    })?;
    let request = TokenRequest {
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        patient: None,
        fhir_user: client.fhir_user.clone(),
        lifetime_seconds: TOKEN_LIFETIME_SECONDS,
    };
    let access_token = issue(key, &auth.issuer, &auth.audience, &request)
        .map_err(|_| OAuthError::new("server_error", "cannot sign the token"))?;
    Ok(Granted {
        access_token,
        scope,
        expires_in: TOKEN_LIFETIME_SECONDS,
    })
}

/// Whether a registered scope allows a requested one.
fn covers(registered: &Scope, requested: &Scope) -> bool {
    registered.context == requested.context
        && registered
            .resource_type
            .as_ref()
            .is_none_or(|t| Some(t) == requested.resource_type.as_ref())
        && requested
            .permissions
            .chars()
            .all(|p| registered.permissions.contains(p))
        && (registered.query.is_empty() || registered.query == requested.query)
}
