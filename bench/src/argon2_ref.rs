//! The reference for the login scenario: raw Argon2id verifications per
//! second at the configured parameters, on this machine, with no server.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Argon2id verifications per second at Emporium's default parameters")]
struct Args {
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Verifying threads (the server under test gets one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let config = kernel::config::AuthConfig::default();
    let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
        .map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(b"emporium-bench-salt").map_err(|e| e.to_string())?;
    let stored = argon.hash_password(b"load test passphrase 9", &salt).map_err(|e| e.to_string())?.to_string();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let threads: Vec<_> = (0..args.threads)
        .map(|_| {
            let stored = stored.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let Ok(parsed) = PasswordHash::new(&stored) else { return 0 };
                while Instant::now() < deadline {
                    if Argon2::default().verify_password(b"load test passphrase 9", &parsed).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    println!(
        "{{\"requests\":{total},\"errors\":0,\"rps\":{:.2},\"p50_ms\":0,\"p99_ms\":0}}",
        total as f64 / args.seconds as f64
    );
    Ok(())
}
