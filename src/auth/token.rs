//! Access tokens: issuing (mode `local`) and checking (all modes but `none`).

use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;
use crate::fhir::instant::now_micros;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    /// The patient of the launch context, for `patient/` scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The user as a FHIR resource, e.g. `Organization/food-bank` or `Practitioner/1`.
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub client_id: String,
    pub scope: String,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub lifetime_seconds: i64,
}

pub fn issue(
    key: &SigningKey,
    issuer: &str,
    audience: &str,
    request: &TokenRequest,
) -> anyhow::Result<String> {
    let now = now_micros() / 1_000_000;
    let claims = Claims {
        iss: issuer.to_string(),
        aud: audience.to_string(),
        sub: request.client_id.clone(),
        exp: now + request.lifetime_seconds,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: request.scope.clone(),
        client_id: request.client_id.clone(),
        patient: request.patient.clone(),
        fhir_user: request.fhir_user.clone(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    encode(&header, &claims, &key.encoding)
        .map_err(|err| anyhow::anyhow!("cannot sign the token: {err}"))
}

/// Checks a token signed by `key`: signature (ES256 only: `none`, HMAC and other algorithms are
/// refused), issuer, audience, expiry and not-before (30 s leeway), and `kid` when present.
pub fn check(
    key: &SigningKey,
    issuer: &str,
    audience: &str,
    token: &str,
) -> Result<Claims, String> {
    let header = decode_header(token).map_err(|_| "malformed token".to_string())?;
    if header.alg != Algorithm::ES256 {
        return Err("unexpected signing algorithm".into());
    }
    if header.kid.as_ref().is_some_and(|kid| *kid != key.kid) {
        return Err("unknown key id".into());
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.validate_nbf = true;
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    decode::<Claims>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|err| format!("invalid token: {err}"))
}
