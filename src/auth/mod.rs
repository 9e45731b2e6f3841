//! Authorization: SMART on FHIR bearer tokens and scopes. Every FHIR request carries a token
//! (except in mode `none`, allowed on loopback only); its scopes decide which interactions on
//! which types it may use, and a `patient/` scope confines it to that patient's compartment,
//! applied inside the database queries.

pub mod backend_services;
pub mod keys;
pub mod policy;
pub mod scopes;
pub mod token;

use std::future::{Ready, ready};
use std::path::PathBuf;

use actix_web::{FromRequest, HttpRequest, web};

use crate::error::FhirError;
use keys::SigningKey;
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

/// Checks tokens for the configured mode.
pub struct Authenticator {
    /// Tokens already verified, with their expiry: verifying an ES256 signature costs more than
    /// the rest of a read, and a client sends the same token many times.
    verified: std::sync::Mutex<std::collections::HashMap<String, (Access, i64)>>,
    pub mode: AuthMode,
    pub policy: std::sync::Arc<policy::Policy>,
    pub key: Option<SigningKey>,
    pub issuer: String,
    pub audience: String,
}

impl Authenticator {
    pub fn new(
        mode: AuthMode,
        data_dir: &std::path::Path,
        issuer: String,
        audience: String,
        policy: policy::Policy,
    ) -> anyhow::Result<Self> {
        let key = match mode {
            AuthMode::Local => Some(keys::load_or_create(data_dir)?),
            AuthMode::Jwks => anyhow::bail!(
                "--auth jwks is not available in this version; use local (the default) or none"
            ),
            AuthMode::None => None,
        };
        Ok(Authenticator {
            verified: Default::default(),
            mode,
            key,
            issuer,
            audience,
            policy: std::sync::Arc::new(policy),
        })
    }

    /// The access a request's `Authorization` header grants.
    pub fn access(&self, authorization: Option<&str>) -> Result<Access, FhirError> {
        let Some(key) = &self.key else {
            return Ok(Access::unrestricted());
        };
        let Some(header) = authorization else {
            return Err(FhirError::Unauthorized("A bearer token is required".into()));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(FhirError::Unauthorized(
                "The Authorization header must be 'Bearer <token>'".into(),
            ));
        };
        let token = token.trim();
        let now = crate::fhir::instant::now_micros() / 1_000_000;
        if let Ok(cache) = self.verified.lock()
            && let Some((access, expires)) = cache.get(token)
            && *expires > now
        {
            return Ok(access.clone());
        }
        let claims = token::check(key, &self.issuer, &self.audience, token)
            .map_err(FhirError::Unauthorized)?;
        let expires = claims.exp;
        let access = Access {
            unrestricted: false,
            scopes: parse_scopes(&claims.scope),
            patient: claims.patient,
            fhir_user: claims.fhir_user,
            client_id: claims.client_id,
            policy: Some(self.policy.clone()),
        };
        if let Ok(mut cache) = self.verified.lock() {
            // bounded: expired entries go first, then everything when it is still full
            if cache.len() >= 10_000 {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= 10_000 {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), (access.clone(), expires));
        }
        Ok(access)
    }
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
    pub policy: Option<std::sync::Arc<policy::Policy>>,
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
    type Future = Ready<Result<Access, FhirError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<crate::api::AppState>>() {
            Some(state) => state.auth.access(
                req.headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok()),
            ),
            None => Err(FhirError::Internal(anyhow::anyhow!(
                "application state missing"
            ))),
        };
        ready(result)
    }
}
