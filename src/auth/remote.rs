//! Mode `jwks`: access tokens issued by an external authorization server, checked against the
//! public keys it publishes (a JWKS at a URL, or a file the deployment keeps current).
//!
//! Keys are looked up by `kid`. A token naming a `kid` the server does not know makes it fetch
//! the key set again (key rotation), at most once per `min_refresh`, so a stream of tokens with
//! made-up key ids cannot turn the server into a load generator against the authorization
//! server. The set is also refreshed periodically in the background.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::VerifiedToken;

/// Where the authorization server's public keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Url(String),
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Url(url) => f.write_str(url),
            KeySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The largest key set accepted from the source.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One usable public key.
struct PublicKey {
    key: DecodingKey,
    /// The algorithms this key may verify: fixed by the key's type (and its `alg`, when given),
    /// never by the token, so a token cannot pick HMAC with a public key as the secret.
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeyTable {
    by_kid: HashMap<String, Arc<PublicKey>>,
    /// Keys published without a `kid`, tried for tokens without one.
    unnamed: Vec<Arc<PublicKey>>,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The token names a key the current set does not hold (it may have rotated in).
    UnknownKey,
    Invalid(String),
}

pub struct RemoteKeys {
    pub source: KeySource,
    /// Bumped whenever a different key set is installed, so tokens verified against a key that
    /// has since been withdrawn are checked again.
    generation: std::sync::atomic::AtomicU64,
    installed_text: Mutex<String>,
    table: RwLock<Arc<KeyTable>>,
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
    http: reqwest::Client,
}

impl RemoteKeys {
    pub fn new(source: KeySource, min_refresh: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|err| anyhow::anyhow!("cannot create the HTTP client: {err}"))?;
        Ok(RemoteKeys {
            source,
            generation: Default::default(),
            installed_text: Default::default(),
            table: RwLock::new(Arc::new(KeyTable::default())),
            last_fetch: Mutex::new(None),
            min_refresh,
            http,
        })
    }

    /// Fetches the key set now and installs it; on failure the current set stays.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(Instant::now());
        }
        let text = self.fetch().await?;
        self.install(text)
    }

    /// The generation of the installed key set.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn install(&self, text: String) -> anyhow::Result<usize> {
        let table = parse_key_set(&text)?;
        let count = table.by_kid.len() + table.unnamed.len();
        let mut installed = self
            .installed_text
            .lock()
            .map_err(|_| anyhow::anyhow!("key table lock poisoned"))?;
        if *installed != text {
            if let Ok(mut current) = self.table.write() {
                *current = Arc::new(table);
            }
            *installed = text;
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(count)
    }

    /// Loads a key file at start-up, so a wrong path or a bad file stops the server at once.
    pub fn load_file_now(&self) -> anyhow::Result<usize> {
        let KeySource::File(path) = &self.source else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
        let count = self
            .install(text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(Instant::now());
        }
        Ok(count)
    }

    /// Refreshes unless the last fetch was less than `min_refresh` ago. Returns whether it
    /// fetched.
    pub async fn refresh_if_due(&self) -> bool {
        let due = self
            .last_fetch
            .lock()
            .map(|last| last.is_none_or(|at| at.elapsed() >= self.min_refresh))
            .unwrap_or(false);
        if !due {
            return false;
        }
        match self.refresh().await {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(source = %self.source, error = %err, "cannot refresh the token signing keys");
                false
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<String> {
        match &self.source {
            KeySource::File(path) => {
                let owned = path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
                    .await
                    .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?
                    .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    anyhow::bail!("{} is larger than {MAX_JWKS_BYTES} bytes", path.display());
                }
                String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))
            }
            KeySource::Url(url) => {
                let mut response = self
                    .http
                    .get(url)
                    .header("Accept", "application/json")
                    .send()
                    .await
                    .map_err(|err| anyhow::anyhow!("cannot fetch {url}: {err}"))?;
                if !response.status().is_success() {
                    anyhow::bail!("{url} answered {}", response.status());
                }
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|err| anyhow::anyhow!("cannot fetch {url}: {err}"))?
                {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_JWKS_BYTES {
                        anyhow::bail!("{url} sent more than {MAX_JWKS_BYTES} bytes");
                    }
                }
                String::from_utf8(body).map_err(|_| anyhow::anyhow!("{url} did not send UTF-8"))
            }
        }
    }

    /// Checks a token's signature against the current keys, then its issuer, audience, expiry
    /// and not-before (30 s leeway).
    pub fn check(
        &self,
        issuer: &str,
        audience: &str,
        token: &str,
    ) -> Result<VerifiedToken, Rejection> {
        let header =
            decode_header(token).map_err(|_| Rejection::Invalid("malformed token".into()))?;
        let table = self
            .table
            .read()
            .map(|t| t.clone())
            .map_err(|_| Rejection::Invalid("signing keys unavailable".into()))?;
        let candidates: Vec<Arc<PublicKey>> = match &header.kid {
            Some(kid) => match table.by_kid.get(kid) {
                Some(key) => vec![key.clone()],
                None if table.by_kid.is_empty() && !table.unnamed.is_empty() => {
                    table.unnamed.clone()
                }
                None => return Err(Rejection::UnknownKey),
            },
            None if table.by_kid.len() + table.unnamed.len() == 1 => table
                .by_kid
                .values()
                .chain(&table.unnamed)
                .cloned()
                .collect(),
            None => {
                return Err(Rejection::Invalid(
                    "the token has no key id (kid) and the key set has several keys".into(),
                ));
            }
        };
        let mut last_error = Rejection::Invalid("unexpected signing algorithm".into());
        for key in candidates {
            if !key.algorithms.contains(&header.alg) {
                continue;
            }
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.validate_nbf = true;
            validation.leeway = 30;
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            match decode::<ExternalClaims>(token, &key.key, &validation) {
                Ok(data) => return data.claims.into_verified(),
                Err(err) => last_error = Rejection::Invalid(format!("invalid token: {err}")),
            }
        }
        Err(last_error)
    }
}

/// Builds the key table from a JWKS document. Keys of unsupported types (symmetric `oct`,
/// unknown curves) are skipped; a set with no usable key is an error.
fn parse_key_set(text: &str) -> anyhow::Result<KeyTable> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|err| anyhow::anyhow!("not a JWKS: {err}"))?;
    let mut table = KeyTable::default();
    for jwk in &set.keys {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => continue,
            },
            _ => continue,
        };
        let algorithms = match jwk.common.key_algorithm {
            Some(declared) => {
                let Some(declared) = algorithm_of(declared) else {
                    continue;
                };
                if !family.contains(&declared) {
                    continue;
                }
                vec![declared]
            }
            None => family,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let key = Arc::new(PublicKey { key, algorithms });
        match &jwk.common.key_id {
            Some(kid) => {
                table.by_kid.insert(kid.clone(), key);
            }
            None => table.unnamed.push(key),
        }
    }
    if table.by_kid.is_empty() && table.unnamed.is_empty() {
        anyhow::bail!("the key set has no RSA or EC (P-256, P-384) signing key");
    }
    Ok(table)
}

fn algorithm_of(declared: KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        _ => return None,
    })
}

/// The claims of a token from an external authorization server. Servers differ in where they
/// put the scopes (`scope` string or `scp` list) and the client (`client_id`, `azp`, `cid`).
#[derive(Debug, Deserialize)]
struct ExternalClaims {
    exp: i64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    cid: Option<String>,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default, rename = "fhirUser")]
    fhir_user: Option<String>,
}

impl ExternalClaims {
    fn into_verified(self) -> Result<VerifiedToken, Rejection> {
        let scope = match (self.scope, self.scp) {
            (Some(scope), _) => scope,
            (None, Some(list)) => list.join(" "),
            (None, None) => return Err(Rejection::Invalid("the token has no scope".into())),
        };
        let client_id = self
            .client_id
            .or(self.azp)
            .or(self.cid)
            .or(self.sub)
            .ok_or_else(|| Rejection::Invalid("the token names no client".into()))?;
        Ok(VerifiedToken {
            scope,
            client_id,
            patient: self.patient,
            fhir_user: self.fhir_user.as_deref().map(relative_reference),
            expires: self.exp,
        })
    }
}

/// `fhirUser` is often an absolute URL (`https://server/fhir/Practitioner/1`); the access policy
/// speaks of `Type/id`.
fn relative_reference(user: &str) -> String {
    let parts: Vec<&str> = user.trim_end_matches('/').rsplitn(3, '/').collect();
    match parts.as_slice() {
        [id, resource_type, _] | [id, resource_type]
            if resource_type.starts_with(|c: char| c.is_ascii_uppercase()) =>
        {
            format!("{resource_type}/{id}")
        }
        _ => user.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_user_urls_become_relative_references() {
        assert_eq!(
            relative_reference("https://ehr.example.org/fhir/Practitioner/12"),
            "Practitioner/12"
        );
        assert_eq!(
            relative_reference("Organization/food-bank"),
            "Organization/food-bank"
        );
    }

    #[test]
    fn symmetric_keys_are_not_usable() {
        let set = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#;
        assert!(parse_key_set(set).is_err());
        assert!(parse_key_set("{}").is_err());
    }
}
