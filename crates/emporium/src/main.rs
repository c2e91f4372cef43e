use clap::Parser;

/// mimalloc returns freed pages to the system: after `serve --demo` made
/// its pictures, glibc's allocator kept some 300 MB of arenas for good.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
