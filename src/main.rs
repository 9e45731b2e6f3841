use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pivot_fhir::{Application, Settings, telemetry};

/// pivot-fhir: FHIR R4 server for Medicaid care coordination and closed-loop SDOH referrals.
#[derive(Parser)]
#[command(name = "pivot-fhir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the FHIR server.
    Serve(Box<Settings>),
    /// Print an access token signed with the server's key (mode `local`).
    Token(TokenArgs),
    /// Manage backend-service clients (SMART Backend Services).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Load NDJSON files (one resource a line) or Bundle JSON files, or folders of them, into
    /// the database: validated and indexed like REST writes; resumable; failures summarized.
    Import(ImportArgs),
    /// Fill the database with a demo program: regions, Pivot Entities, CBOs, practices,
    /// recipients, screenings, care plans and referrals in every status.
    Seed {
        /// The demo program (the only data set).
        #[arg(long, required = true)]
        demo: bool,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pivot.db")]
        database_url: String,
    },
    /// Print the OpenAPI document (what `openapi/openapi.json` holds and `/openapi.json` serves).
    Openapi,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register (or replace) a client: its public keys and the scopes it may ask for.
    Add {
        #[arg(long)]
        client_id: String,
        /// A JWKS file with the client's public key(s).
        #[arg(long)]
        jwks: std::path::PathBuf,
        /// The most the client may get, space-separated, e.g. "system/*.rs".
        #[arg(long)]
        scope: String,
        /// The client as a FHIR resource (e.g. a CBO: Organization/food-bank).
        #[arg(long)]
        fhir_user: Option<String>,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pivot.db")]
        database_url: String,
    },
}

#[derive(clap::Args)]
struct ImportArgs {
    /// Files (`*.ndjson`, `*.jsonl`: NDJSON; `*.json`: a Bundle) or folders of them.
    #[arg(required = true)]
    paths: Vec<std::path::PathBuf>,
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pivot.db")]
    database_url: String,
    /// Import the files from their start again, forgetting earlier progress and failures.
    #[arg(long)]
    restart: bool,
}

/// Runs `import`: progress on stderr, one NDJSON line per failure on stdout (the file, the
/// 1-based line or entry and an OperationOutcome), totals on stderr; fails if anything failed.
fn import(args: &ImportArgs) -> anyhow::Result<bool> {
    use pivot_fhir::import;
    let files = import::collect(&args.paths)?;
    let store = pivot_fhir::store::Store::open(&args.database_url, 2)?;
    let (registry, _) = store
        .blocking(pivot_fhir::service::search_parameters::load)
        .map_err(|err| anyhow::anyhow!("cannot load the search parameters: {err}"))?;
    let canonical: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .map(|p| p.display().to_string())
        .collect();
    if args.restart {
        store
            .blocking_write(|conn| import::forget(conn, &canonical))
            .map_err(|err: pivot_fhir::store::StoreError| anyhow::anyhow!("{err}"))?;
    }
    let mut totals = import::FileReport::default();
    for file in &files {
        let report = import::import_file(&store, &registry, file)?;
        if report.skipped > 0 {
            eprintln!(
                "{}: {} of {} items were done by an earlier run",
                file.display(),
                report.skipped,
                report.total
            );
        }
        totals.total += report.total;
        totals.skipped += report.skipped;
        totals.written += report.written;
        totals.failed += report.failed;
    }
    let failures = store
        .blocking(|conn| import::failures(conn, &canonical))
        .map_err(|err: pivot_fhir::store::StoreError| anyhow::anyhow!("{err}"))?;
    for failure in &failures {
        println!("{}", import::failure_line(failure));
    }
    eprintln!(
        "import: {} files, {} resources written, {} failed ({} failures recorded in all, one \
         OperationOutcome each on stdout), {} done earlier",
        files.len(),
        totals.written,
        totals.failed,
        failures.len(),
        totals.skipped
    );
    Ok(failures.is_empty())
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The client the token is for (`client_id`, `sub`).
    #[arg(long)]
    client_id: String,
    /// SMART scopes, space-separated, e.g. "system/*.cruds" or "patient/Observation.rs".
    #[arg(long)]
    scope: String,
    /// The patient of the launch context (for patient/ scopes).
    #[arg(long)]
    patient: Option<String>,
    /// The user as a FHIR resource, e.g. Organization/food-bank.
    #[arg(long)]
    fhir_user: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: i64,
    /// The server's database URL, which locates its data folder.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pivot.db")]
    database_url: String,
    /// The server's data folder (default: beside the SQLite database, else `data`).
    #[arg(long, env = "PIVOT_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[arg(long, env = "PIVOT_TOKEN_ISSUER", default_value = "pivot-fhir")]
    token_issuer: String,
    #[arg(long, env = "PIVOT_TOKEN_AUDIENCE", default_value = "pivot-fhir")]
    token_audience: String,
}

fn register_client(
    client_id: &str,
    jwks: &std::path::Path,
    scope: &str,
    fhir_user: Option<String>,
    database_url: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(jwks)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", jwks.display()))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
        .map_err(|err| anyhow::anyhow!("{} is not a JWKS: {err}", jwks.display()))?;
    if set.keys.iter().any(|k| {
        matches!(
            k.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        )
    }) {
        anyhow::bail!("a client JWKS holds public keys only (EC or RSA), not shared secrets");
    }
    let store = pivot_fhir::store::Store::open(database_url, 1)?;
    let client = pivot_fhir::store::clients::Client {
        client_id: client_id.to_string(),
        jwks: text,
        scope: scope.to_string(),
        fhir_user,
        created_at: chrono::Utc::now().timestamp_micros(),
    };
    store
        .blocking(|conn| pivot_fhir::store::clients::save(conn, &client))
        .map_err(|err| anyhow::anyhow!("cannot save the client: {err}"))
}

/// On a developer's machine (local auth, loopback address) prints where the server is and a
/// short-lived token to try it with; printed to the terminal, never to the log.
fn print_welcome(settings: &Settings, port: u16) {
    let loopback = settings.bind_address().is_ok_and(|a| a.ip().is_loopback());
    if settings.auth != pivot_fhir::auth::AuthMode::Local || !loopback {
        return;
    }
    let request = pivot_fhir::auth::token::TokenRequest {
        client_id: "local-admin".into(),
        scope: "system/*.cruds".into(),
        patient: None,
        fhir_user: None,
        lifetime_seconds: 3600,
    };
    let token = pivot_fhir::auth::keys::load_or_create(&settings.data_dir()).and_then(|key| {
        pivot_fhir::auth::token::issue(
            &key,
            &settings.token_issuer,
            &settings.token_audience,
            &request,
        )
    });
    if let Ok(token) = token {
        println!("pivot-fhir: FHIR base http://127.0.0.1:{port}/fhir");
        println!(
            "pivot-fhir: a token to try it (system/*.cruds, valid 1 hour):\n\n  export TOKEN={token}\n"
        );
        println!(
            "pivot-fhir: then: curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:{port}/fhir/Patient"
        );
        println!(
            "pivot-fhir: more tokens: pivot-fhir token --client-id NAME --scope \"SCOPES\" [--patient ID]"
        );
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Import(args) => match import(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(err) => {
                eprintln!("pivot-fhir: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Seed {
            demo: _,
            database_url,
        } => {
            let seeded = pivot_fhir::store::Store::open(&database_url, 2).and_then(|store| {
                let (registry, _) = store
                    .blocking(pivot_fhir::service::search_parameters::load)
                    .map_err(|err| anyhow::anyhow!("cannot load the search parameters: {err}"))?;
                pivot_fhir::seed::seed(&store, &registry)
            });
            match seeded {
                Ok(0) => {
                    eprintln!("the demo program is already in the database: nothing written");
                    ExitCode::SUCCESS
                }
                Ok(n) => {
                    eprintln!("seeded the demo program: {n} resources");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("pivot-fhir: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Openapi => {
            print!("{}", pivot_fhir::openapi::document_json());
            ExitCode::SUCCESS
        }
        Command::Client(ClientCommand::Add {
            client_id,
            jwks,
            scope,
            fhir_user,
            database_url,
        }) => {
            let result = register_client(&client_id, &jwks, &scope, fhir_user, &database_url);
            match result {
                Ok(()) => {
                    println!("registered client {client_id}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("pivot-fhir: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| pivot_fhir::auth::default_data_dir(&args.database_url));
            let issued = pivot_fhir::auth::keys::load_or_create(&data_dir).and_then(|key| {
                let request = pivot_fhir::auth::token::TokenRequest {
                    client_id: args.client_id,
                    scope: args.scope,
                    patient: args.patient,
                    fhir_user: args.fhir_user,
                    lifetime_seconds: args.lifetime,
                };
                pivot_fhir::auth::token::issue(
                    &key,
                    &args.token_issuer,
                    &args.token_audience,
                    &request,
                )
            });
            match issued {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("pivot-fhir: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(settings) => {
            telemetry::init(&settings.log_format);
            let result = match Application::build(&settings) {
                Ok(app) => {
                    print_welcome(&settings, app.port());
                    app.run_until_stopped().await.map_err(anyhow::Error::from)
                }
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("pivot-fhir: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
