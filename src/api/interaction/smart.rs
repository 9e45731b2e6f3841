//! SMART discovery (`/.well-known/smart-configuration`, App Launch 2.0 §conformance) and the
//! server's public signing keys (`/auth/jwks`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::api::AppState;
use crate::auth::AuthMode;

pub async fn configuration(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let base = state.fhir_base(&req);
    let root = base.trim_end_matches("/fhir").to_string();
    let mode = match state.auth.mode {
        AuthMode::Local => "local",
        AuthMode::Jwks => "jwks",
        AuthMode::None => "none",
    };
    HttpResponse::Ok().content_type("application/json").json(json!({
        "issuer": state.auth.issuer,
        "jwks_uri": format!("{root}/auth/jwks"),
        "token_endpoint": format!("{root}/auth/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256", "RS384"],
        "scopes_supported": ["system/*.rs", "system/*.cruds", "user/*.cruds", "patient/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2", "permission-patient", "permission-user"],
        "pivot_auth_mode": mode,
    }))
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
