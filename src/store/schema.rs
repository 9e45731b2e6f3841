//! Table definitions shared by both backends (see `migrations/`).

diesel::table! {
    resource_versions (resource_type, id, version_id) {
        resource_type -> Text,
        id -> Text,
        version_id -> BigInt,
        last_updated -> BigInt,
        method -> Text,
        content -> Nullable<Text>,
    }
}

diesel::table! {
    resources (pk) {
        pk -> BigInt,
        resource_type -> Text,
        id -> Text,
        version_id -> BigInt,
        last_updated -> BigInt,
        deleted -> Integer,
        content -> Nullable<Text>,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        kind -> Text,
        status -> Text,
        parameters -> Text,
        cursor -> BigInt,
        processed -> BigInt,
        total -> BigInt,
        message -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        owner -> Nullable<Text>,
        result -> Nullable<Text>,
    }
}

diesel::table! {
    server_state (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    clients (client_id) {
        client_id -> Text,
        jwks -> Text,
        scope -> Text,
        fhir_user -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    used_assertions (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        recorded -> BigInt,
        interaction -> Text,
        action -> Text,
        status -> Integer,
        client_id -> Text,
        fhir_user -> Nullable<Text>,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        version_id -> Nullable<BigInt>,
        query -> Nullable<Text>,
        request_id -> Nullable<Text>,
    }
}
