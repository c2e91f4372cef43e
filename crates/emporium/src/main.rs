use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = emporium::Cli::parse();
    let result = emporium::run(cli).await;
    platform::telemetry::flush_logs();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emporium: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
