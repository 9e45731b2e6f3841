//! SMART discovery (`/.well-known/smart-configuration`, App Launch 2.0 §conformance), the
//! server's public signing keys (`/auth/jwks`), and the CapabilityStatement's security section:
//! all three describe the same authorization mode.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::api::AppState;
use crate::auth::{AuthMode, Authenticator};

const SCOPES_SUPPORTED: &[&str] = &[
    "system/*.rs",
    "system/*.cruds",
    "user/*.cruds",
    "patient/*.rs",
];
const CAPABILITIES: &[&str] = &[
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
];

/// Where clients get tokens and where the token signing keys are published.
struct Endpoints {
    token: Option<String>,
    authorize: Option<String>,
    jwks: Option<String>,
}

fn endpoints(auth: &Authenticator, root: &str) -> Endpoints {
    match auth.mode {
        AuthMode::Local => Endpoints {
            token: Some(format!("{root}/auth/token")),
            authorize: None,
            jwks: Some(format!("{root}/auth/jwks")),
        },
        AuthMode::Jwks => Endpoints {
            token: auth.external.token_url.clone(),
            authorize: auth.external.authorize_url.clone(),
            jwks: auth.external.url.clone(),
        },
        AuthMode::None => Endpoints {
            token: None,
            authorize: None,
            jwks: None,
        },
    }
}

fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Local => "local",
        AuthMode::Jwks => "jwks",
        AuthMode::None => "none",
    }
}

pub async fn configuration(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let base = state.fhir_base(&req);
    let root = base.trim_end_matches("/fhir");
    let auth = &state.auth;
    if auth.mode == AuthMode::None {
        // Discovery describes how to get a token; without authorization there is none to get.
        return HttpResponse::NotFound()
            .content_type("application/json")
            .json(json!({ "error": "authorization is off on this server (--auth none)" }));
    }
    let endpoints = endpoints(auth, root);
    let mut configuration = json!({
        "issuer": auth.issuer,
        "grant_types_supported": if auth.mode == AuthMode::Local {
            json!(["client_credentials"])
        } else {
            json!(["client_credentials", "authorization_code"])
        },
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256", "RS384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": CAPABILITIES,
        "pivot_auth_mode": mode_name(auth.mode),
    });
    for (name, value) in [
        ("token_endpoint", endpoints.token),
        ("authorization_endpoint", endpoints.authorize),
        ("jwks_uri", endpoints.jwks),
    ] {
        if let Some(value) = value {
            configuration[name] = json!(value);
        }
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .json(configuration)
}

/// `CapabilityStatement.rest.security` for the server's mode.
pub fn security(auth: &Authenticator, fhir_base: &str) -> Value {
    if auth.mode == AuthMode::None {
        return json!({
            "cors": false,
            "description": "Authorization is off (--auth none): every request may do anything. \
                            The server accepts this only on a loopback address.",
        });
    }
    let root = fhir_base.trim_end_matches("/fhir");
    let endpoints = endpoints(auth, root);
    let uris: Vec<Value> = [
        ("token", endpoints.token),
        ("authorize", endpoints.authorize),
    ]
    .into_iter()
    .filter_map(|(name, uri)| uri.map(|uri| json!({ "url": name, "valueUri": uri })))
    .collect();
    let description = match auth.mode {
        AuthMode::Local => {
            "SMART on FHIR: bearer tokens issued by this server (SMART Backend Services, \
             client_credentials with a private_key_jwt client assertion), ES256-signed; \
             SMART v1 and v2 scopes, patient compartment limits and the program's access policy."
        }
        _ => {
            "SMART on FHIR: bearer tokens issued by the program's authorization server, \
             RS256 or ES256, checked against its published keys; SMART v1 and v2 scopes, \
             patient compartment limits and the program's access policy."
        }
    };
    let mut security = json!({
        "cors": false,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
        }],
        "description": description,
    });
    if !uris.is_empty() {
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": uris,
        }]);
    }
    security
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys: Vec<serde_json::Value> = state
        .auth
        .key
        .iter()
        .filter_map(|k| serde_json::to_value(&k.jwk).ok())
        .collect();
    HttpResponse::Ok()
        .content_type("application/json")
        .json(json!({ "keys": keys }))
}
