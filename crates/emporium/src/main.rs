use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = emporium::Cli::parse();
    match emporium::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emporium: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
