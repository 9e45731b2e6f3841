//! Authorization: SMART on FHIR bearer tokens and scopes. Every FHIR request carries a token
//! (except in mode `none`, allowed on loopback only); its scopes decide which interactions on
//! which types it may use, and a `patient/` scope confines it to that patient's compartment,
//! applied inside the database queries.

pub mod backend_services;
pub mod keys;
pub mod policy;
pub mod remote;
pub mod scopes;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{FromRequest, HttpRequest, web};

use crate::error::FhirError;
use keys::SigningKey;
use remote::{KeySource, Rejection, RemoteKeys};
use scopes::{Context, Permission, Scope, parse_scopes};

/// How requests are authorized (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// The server issues and checks its own tokens (signing key in the data folder).
    Local,
    /// Tokens from an external authorization server, checked against its JWKS.
    Jwks,
    /// No authorization: loopback addresses only, for development.
    None,
}

/// What a valid token says, whoever issued it.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub scope: String,
    pub client_id: String,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    /// Expiry, seconds since the epoch.
    pub expires: i64,
}

/// A verified token's access, until `expires`, while the key set is still `generation`.
struct CachedAccess {
    access: Access,
    expires: i64,
    generation: u64,
}

/// Checks tokens for the configured mode.
pub struct Authenticator {
    /// Tokens already verified, with their expiry: verifying a signature costs more than the
    /// rest of a read, and a client sends the same token many times.
    verified: std::sync::Mutex<std::collections::HashMap<String, CachedAccess>>,
    pub mode: AuthMode,
    pub policy: Arc<policy::Policy>,
    /// Mode `local`: the server's own key.
    pub key: Option<SigningKey>,
    /// Mode `jwks`: the external authorization server's keys.
    pub remote: Option<RemoteKeys>,
    /// Mode `jwks`: where clients get tokens (the external server's endpoints).
    pub external: JwksSettings,
    pub issuer: String,
    pub audience: String,
}

/// Where mode `jwks` finds the authorization server's keys.
#[derive(Debug, Clone, Default)]
pub struct JwksSettings {
    pub url: Option<String>,
    pub file: Option<PathBuf>,
    /// Least time between two fetches caused by tokens with an unknown key id.
    pub min_refresh: std::time::Duration,
    /// The authorization server's endpoints, for SMART discovery.
    pub token_url: Option<String>,
    pub authorize_url: Option<String>,
}

impl Authenticator {
    pub fn new(
        mode: AuthMode,
        data_dir: &std::path::Path,
        issuer: String,
        audience: String,
        policy: policy::Policy,
        jwks: &JwksSettings,
    ) -> anyhow::Result<Self> {
        let (key, remote) = match mode {
            AuthMode::Local => (Some(keys::load_or_create(data_dir)?), None),
            AuthMode::Jwks => {
                let source = match (&jwks.url, &jwks.file) {
                    (Some(url), None) => KeySource::Url(url.clone()),
                    (None, Some(file)) => KeySource::File(file.clone()),
                    _ => anyhow::bail!(
                        "--auth jwks needs exactly one of --jwks-url or --jwks-file (the \
                         authorization server's public keys)"
                    ),
                };
                (None, Some(RemoteKeys::new(source, jwks.min_refresh)?))
            }
            AuthMode::None => (None, None),
        };
        Ok(Authenticator {
            verified: Default::default(),
            mode,
            key,
            remote,
            external: jwks.clone(),
            issuer,
            audience,
            policy: Arc::new(policy),
        })
    }

    /// The access a request's `Authorization` header grants. In mode `jwks`, a token signed by a
    /// key the server has not seen yet makes it fetch the key set again (rate-limited).
    pub async fn access(&self, authorization: Option<&str>) -> Result<Access, FhirError> {
        match self.access_with_current_keys(authorization) {
            Err(Rejection::UnknownKey) => {
                if let Some(remote) = &self.remote
                    && remote.refresh_if_due().await
                {
                    return self
                        .access_with_current_keys(authorization)
                        .map_err(rejection_error);
                }
                Err(rejection_error(Rejection::UnknownKey))
            }
            result => result.map_err(rejection_error),
        }
    }

    fn access_with_current_keys(&self, authorization: Option<&str>) -> Result<Access, Rejection> {
        if self.mode == AuthMode::None {
            return Ok(Access::unrestricted());
        }
        let Some(header) = authorization else {
            return Err(Rejection::Invalid("A bearer token is required".into()));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(Rejection::Invalid(
                "The Authorization header must be 'Bearer <token>'".into(),
            ));
        };
        let token = token.trim();
        let now = crate::fhir::instant::now_micros() / 1_000_000;
        let generation = self.remote.as_ref().map_or(0, RemoteKeys::generation);
        if let Ok(cache) = self.verified.lock()
            && let Some(cached) = cache.get(token)
            && cached.expires > now
            && cached.generation == generation
        {
            return Ok(cached.access.clone());
        }
        let verified = match (&self.key, &self.remote) {
            (Some(key), _) => token::check(key, &self.issuer, &self.audience, token)
                .map(|claims| VerifiedToken {
                    scope: claims.scope,
                    client_id: claims.client_id,
                    patient: claims.patient,
                    fhir_user: claims.fhir_user,
                    expires: claims.exp,
                })
                .map_err(Rejection::Invalid)?,
            (None, Some(remote)) => remote.check(&self.issuer, &self.audience, token)?,
            (None, None) => return Err(Rejection::Invalid("no key to check tokens".into())),
        };
        let expires = verified.expires;
        let access = Access {
            unrestricted: false,
            scopes: parse_scopes(&verified.scope),
            patient: verified.patient,
            fhir_user: verified.fhir_user,
            client_id: verified.client_id,
            policy: Some(self.policy.clone()),
        };
        if let Ok(mut cache) = self.verified.lock() {
            // bounded: expired entries go first, then everything when it is still full
            if cache.len() >= 10_000 {
                cache.retain(|_, cached| cached.expires > now);
                if cache.len() >= 10_000 {
                    cache.clear();
                }
            }
            cache.insert(
                token.to_string(),
                CachedAccess {
                    access: access.clone(),
                    expires,
                    generation,
                },
            );
        }
        Ok(access)
    }
}

fn rejection_error(rejection: Rejection) -> FhirError {
    FhirError::Unauthorized(match rejection {
        Rejection::UnknownKey => "unknown key id".into(),
        Rejection::Invalid(message) => message,
    })
}

/// Where the data folder is: beside a SQLite database, else `data`.
pub fn default_data_dir(database_url: &str) -> PathBuf {
    database_url
        .strip_prefix("sqlite://")
        .and_then(|path| std::path::Path::new(path).parent().map(|p| p.to_path_buf()))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// What the caller of one request may do.
#[derive(Debug, Clone)]
pub struct Access {
    /// Mode `none`: everything.
    pub unrestricted: bool,
    pub scopes: Vec<Scope>,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub client_id: String,
    /// The program roles that may further limit a token with a `fhirUser`.
    pub policy: Option<Arc<policy::Policy>>,
}

/// What a permission on a type comes with: limits every query must add.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Confine to this patient's compartment (every granting scope is a `patient/` scope).
    pub patient: Option<String>,
    /// Confine to resources matching one of these queries (v2 query-constrained scopes); empty
    /// when some granting scope has no constraint.
    pub queries: Vec<Vec<(String, String)>>,
    /// The token's user, whose program role (if any) limits it further.
    pub fhir_user: Option<(String, std::sync::Arc<policy::Policy>)>,
}

impl Grant {
    pub fn is_unlimited(&self) -> bool {
        self.patient.is_none() && self.queries.is_empty() && self.fhir_user.is_none()
    }
}

impl Access {
    pub fn unrestricted() -> Self {
        Access {
            unrestricted: true,
            scopes: Vec::new(),
            patient: None,
            fhir_user: None,
            client_id: "anonymous".into(),
            policy: None,
        }
    }

    /// The grant for `permission` on `resource_type`, or 403.
    pub fn require(&self, resource_type: &str, permission: Permission) -> Result<Grant, FhirError> {
        if self.unrestricted {
            return Ok(Grant::default());
        }
        let granting: Vec<&Scope> = self
            .scopes
            .iter()
            .filter(|s| s.applies_to(resource_type) && s.grants(permission))
            .collect();
        if granting.is_empty() {
            return Err(FhirError::Forbidden(format!(
                "The token's scopes do not allow {} on {resource_type}",
                permission_name(permission)
            )));
        }
        let all_patient = granting.iter().all(|s| s.context == Context::Patient);
        let patient = if all_patient {
            Some(self.patient.clone().ok_or_else(|| {
                FhirError::Forbidden(
                    "patient/ scopes need a patient in the token's launch context".into(),
                )
            })?)
        } else {
            None
        };
        let relevant: Vec<&&Scope> = granting
            .iter()
            .filter(|s| !all_patient || s.context == Context::Patient)
            .collect();
        let queries = if relevant.iter().all(|s| !s.query.is_empty()) {
            relevant.iter().map(|s| s.query.clone()).collect()
        } else {
            Vec::new()
        };
        let fhir_user = match (&self.fhir_user, &self.policy) {
            (Some(user), Some(policy)) if !policy.roles.is_empty() => {
                Some((user.clone(), policy.clone()))
            }
            _ => None,
        };
        Ok(Grant {
            patient,
            queries,
            fhir_user,
        })
    }

    /// Administrative operations (`$reindex`, jobs): a `system/*` or `user/*` scope with
    /// create and update.
    pub fn require_admin(&self) -> Result<(), FhirError> {
        if self.unrestricted
            || self.scopes.iter().any(|s| {
                s.context != Context::Patient
                    && s.resource_type.is_none()
                    && s.grants(Permission::Create)
                    && s.grants(Permission::Update)
            })
        {
            Ok(())
        } else {
            Err(FhirError::Forbidden(
                "This operation needs a system/*.cruds (or user/*.*) scope".into(),
            ))
        }
    }
}

fn permission_name(permission: Permission) -> &'static str {
    match permission {
        Permission::Create => "create",
        Permission::Read => "read",
        Permission::Update => "update",
        Permission::Delete => "delete",
        Permission::Search => "search",
    }
}

impl FromRequest for Access {
    type Error = FhirError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Access, FhirError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<crate::api::AppState>>().cloned();
        let request = req.clone();
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            match state {
                Some(state) => {
                    let access = state.auth.access(authorization.as_deref()).await?;
                    // the audit trail records who made the request
                    actix_web::HttpMessage::extensions_mut(&request).insert(access.clone());
                    Ok(access)
                }
                None => Err(FhirError::Internal(anyhow::anyhow!(
                    "application state missing"
                ))),
            }
        })
    }
}
