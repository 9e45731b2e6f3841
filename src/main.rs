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
    Serve(Settings),
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => {
            telemetry::init(&settings.log_format);
            let result = match Application::build(&settings) {
                Ok(app) => app.run_until_stopped().await.map_err(anyhow::Error::from),
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
