//! Runs the benchmark scenarios: starts the reference server and Emporium
//! (release builds, next to this binary), drives each with `loadgen` on its
//! own core, reads the servers' peak RSS, and writes `bench/RESULTS.md` with
//! every figure also given as a ratio to the reference measured in the same
//! invocation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Emporium benchmark runner (see the Benchmarks section of README.md)")]
struct Args {
    /// Seconds of measured load per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Runs per server; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to write the report.
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// Run only scenarios whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the reservation storm.
    #[arg(long)]
    no_storm: bool,
}

#[derive(serde::Deserialize, Clone)]
struct Load {
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Measured {
    load: Load,
    peak_rss_kib: u64,
    /// The size of one response body.
    body_bytes: usize,
}

/// What a scenario sends to Emporium.
struct Call {
    method: &'static str,
    /// `{product}` is replaced by the slug of the first listed product.
    path: &'static str,
    /// Sign in the bench user first and send the access token.
    signed_in: bool,
    /// Send the bench user's credentials as the JSON body.
    login_body: bool,
    /// The catalog the server starts with.
    catalog: Seed,
    /// Serve public catalog pages from the response cache.
    cache: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seed {
    Empty,
    Demo,
    Products(usize),
}

const PLAIN: Call = Call { method: "GET", path: "/healthz", signed_in: false, login_body: false, catalog: Seed::Empty, cache: true };

/// What a scenario compares Emporium with.
enum Reference {
    /// The bare axum server, `GET <path>`.
    Server(&'static str),
    /// The bare axum server answering a fixed body as long as Emporium's
    /// answer in the same round: the cost of the bytes on the wire is on
    /// both sides, and the ratio is what Emporium's own work costs.
    SameBody,
    /// Raw Argon2id verifications at the configured parameters.
    Argon2,
}

struct Scenario {
    name: &'static str,
    call: Call,
    reference: Reference,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "healthz", call: PLAIN, reference: Reference::Server("/healthz") },
    Scenario {
        name: "login",
        call: Call { method: "POST", path: "/api/v1/auth/login", login_body: true, ..PLAIN },
        reference: Reference::Argon2,
    },
    Scenario {
        name: "me",
        call: Call { path: "/api/v1/me", signed_in: true, ..PLAIN },
        reference: Reference::Server("/healthz"),
    },
    Scenario {
        name: "product detail (cached)",
        call: Call { path: "/api/v1/products/{product}", catalog: Seed::Demo, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "product detail (cache off)",
        call: Call { path: "/api/v1/products/{product}", catalog: Seed::Demo, cache: false, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "product list of 20 (cache off)",
        call: Call { path: "/api/v1/products?limit=20", catalog: Seed::Demo, cache: false, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "storefront home (rendered)",
        call: Call { path: "/", catalog: Seed::Demo, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "storefront category (rendered)",
        call: Call { path: "/categories/men", catalog: Seed::Demo, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "storefront product (rendered)",
        call: Call { path: "/products/{product}", catalog: Seed::Demo, ..PLAIN },
        reference: Reference::SameBody,
    },
    Scenario {
        name: "category page, 20 of 100k (cache off)",
        call: Call { path: "/api/v1/products?category=shirts&limit=20", catalog: Seed::Products(100_000), cache: false, ..PLAIN },
        reference: Reference::Server("/healthz"),
    },
];

const BENCH_EMAIL: &str = "bench@example.com";
const BENCH_PASSWORD: &str = "load test passphrase 9";

fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no folder for the binaries")?;
    let pin = which("taskset");
    let mut rows = Vec::new();
    let chosen = SCENARIOS.iter().filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())));
    for scenario in chosen {
        let reference_name = match scenario.reference {
            Reference::Server(_) => "reference",
            Reference::SameBody => "reference (same body size)",
            Reference::Argon2 => "argon2id (raw)",
        };
        let mut reference_runs = Vec::new();
        let mut emporium_runs = Vec::new();
        // Alternate round by round, so drift in the machine's state affects both alike.
        for round in 0..args.rounds {
            eprintln!("{} / emporium / round {}", scenario.name, round + 1);
            let ours = measure_emporium(&scenario.call, &dir, &args, pin)?;
            let body_bytes = ours.body_bytes;
            emporium_runs.push(ours);
            eprintln!("{} / {reference_name} / round {}", scenario.name, round + 1);
            reference_runs.push(measure_reference(&scenario.reference, body_bytes, &dir, &args, pin)?);
        }
        rows.push((scenario.name, vec![reference_name, "emporium"], vec![median(reference_runs), median(emporium_runs)]));
    }
    for seed in SCENARIOS.iter().map(|s| s.call.catalog) {
        let _ = std::fs::remove_dir_all(data_path(seed));
    }
    let mut report = render(&args, pin, &rows);
    if args.no_storm {
        std::fs::write(&args.out, &report).map_err(|e| format!("{}: {e}", args.out.display()))?;
        println!("{report}");
        return Ok(());
    }
    eprintln!("reservation storm");
    let storm = vec![dir.join("storm").display().to_string(), "--stock".into(), "5000".into(), "--tasks".into(), "64".into()];
    let out = spawn(&storm, pin.then_some("0"), false, &[])?.wait_with_output().map_err(|e| e.to_string())?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("storm: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    report += &format!(
        "\nReservation storm (one SKU, 5,000 units, 64 concurrent tasks reserving one unit each until it is gone, \
         SQLite, one core): **{} reservations/s**, {} held of {} — oversold: **{}**.\n",
        result["per_second"], result["reservations"], result["stock"], result["oversold"]
    );
    std::fs::write(&args.out, &report).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("{report}");
    Ok(())
}

fn measure_reference(reference: &Reference, body_bytes: usize, dir: &Path, args: &Args, pin: bool) -> Result<Measured, String> {
    match reference {
        Reference::Server(_) | Reference::SameBody => {
            let mut command = vec![dir.join("bench-ref").display().to_string()];
            let path = match reference {
                Reference::Server(path) => *path,
                _ => {
                    command.extend(["--body-bytes".into(), body_bytes.to_string()]);
                    "/body"
                }
            };
            let mut child = spawn(&command, pin.then_some("0"), true, &[])?;
            let result = (|| {
                let addr = read_address(&mut child)?;
                let sent = http_get(&addr, path)?.len();
                let load = run_load(dir, args, pin, &format!("http://{addr}{path}"), "GET", None, None)?;
                Ok(Measured { load, peak_rss_kib: peak_rss_kib(child.id()).ok_or("no RSS")?, body_bytes: sent })
            })();
            stop(child);
            result
        }
        Reference::Argon2 => {
            let command = vec![dir.join("argon2-ref").display().to_string(), "--seconds".into(), args.seconds.to_string()];
            let out = spawn(&command, pin.then_some("0"), false, &[])?.wait_with_output().map_err(|e| e.to_string())?;
            let load: Load = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            Ok(Measured { load, peak_rss_kib: 0, body_bytes: 0 })
        }
    }
}

/// A data folder holding the scenario's catalog, seeded once and reused by
/// every round (a 100k catalog takes a while to make).
fn data_path(seed: Seed) -> PathBuf {
    let name = match seed {
        Seed::Empty => "empty".to_owned(),
        Seed::Demo => "demo".to_owned(),
        Seed::Products(n) => format!("products-{n}"),
    };
    std::env::temp_dir().join(format!("emporium-bench-{}-{name}", std::process::id()))
}

fn data_dir(seed: Seed, dir: &Path) -> Result<PathBuf, String> {
    let data = data_path(seed);
    if data.exists() {
        return Ok(data);
    }
    let emporium = dir.join("emporium").display().to_string();
    let seed_args: Vec<String> = match seed {
        Seed::Empty => return Ok(data),
        Seed::Demo => vec!["--demo".into()],
        Seed::Products(n) => vec!["--products".into(), n.to_string()],
    };
    eprintln!("seeding {}", data.display());
    let mut command = vec![emporium, "seed".into(), "--data-dir".into(), data.display().to_string()];
    command.extend(seed_args);
    let out = spawn(&command, None, false, &[("EMPORIUM_LOG", "warn")])?.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("seeding failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(data)
}

/// A one-off `GET`; returns the response body.
/// A GET's whole answer: status line, headers and body.
fn http_get_raw(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response)
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let response = http_get_raw(addr, path)?;
    Ok(response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Waits until the server says it is ready (`/readyz`). A shop still
/// building its search index from the catalog (a minute for 100,000
/// products) is sent no traffic by a load balancer, and is not measured
/// here either: the build would take the measured core.
fn wait_ready(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ready = http_get_raw(addr, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the server at {addr} was not ready after 15 minutes"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn measure_emporium(call: &Call, dir: &Path, args: &Args, pin: bool) -> Result<Measured, String> {
    let data = data_dir(call.catalog, dir)?;
    let command = vec![
        dir.join("emporium").display().to_string(),
        "serve".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    // The per-address limits would stop a load generator on one address.
    let env = [
        ("EMPORIUM_AUTH_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", "1000000000"),
        ("EMPORIUM_LIMITS_PER_IP_PER_MINUTE", "0"),
        ("EMPORIUM_LIMITS_PER_PRINCIPAL_PER_MINUTE", "0"),
        ("EMPORIUM_CATALOG_CACHE", if call.cache { "true" } else { "false" }),
    ];
    let mut child = spawn(&command, pin.then_some("0"), true, &env)?;
    let result = (|| {
        let addr = read_address(&mut child)?;
        wait_ready(&addr)?;
        let credentials = format!(r#"{{"email":"{BENCH_EMAIL}","password":"{BENCH_PASSWORD}"}}"#);
        let path = if call.path.contains("{product}") {
            let list: serde_json::Value =
                serde_json::from_str(&http_get(&addr, "/api/v1/products?limit=1")?).map_err(|e| e.to_string())?;
            let slug = list["data"][0]["slug"].as_str().ok_or("the catalog is empty")?.to_owned();
            call.path.replace("{product}", &slug)
        } else {
            call.path.to_owned()
        };
        let token = if call.signed_in || call.login_body {
            let register = format!(r#"{{"email":"{BENCH_EMAIL}","password":"{BENCH_PASSWORD}","name":"Bench"}}"#);
            // The data folder is kept between rounds: the user may exist.
            let _ = http_post(&addr, "/api/v1/auth/register", &register);
            let tokens: serde_json::Value =
                serde_json::from_str(&http_post(&addr, "/api/v1/auth/login", &credentials)?).map_err(|e| e.to_string())?;
            tokens["access_token"].as_str().map(str::to_owned)
        } else {
            None
        };
        let body_bytes = if call.method == "GET" && !call.signed_in { http_get(&addr, &path)?.len() } else { 0 };
        let auth = if call.signed_in { token.map(|t| format!("authorization: Bearer {t}")) } else { None };
        let body = call.login_body.then_some(credentials.as_str());
        let load = run_load(dir, args, pin, &format!("http://{addr}{path}"), call.method, body, auth.as_deref())?;
        Ok(Measured { load, peak_rss_kib: peak_rss_kib(child.id()).ok_or("no RSS")?, body_bytes })
    })();
    stop(child);
    result
}

fn run_load(
    dir: &Path,
    args: &Args,
    pin: bool,
    url: &str,
    method: &str,
    body: Option<&str>,
    header: Option<&str>,
) -> Result<Load, String> {
    let mut loadgen = vec![
        dir.join("loadgen").display().to_string(),
        "--url".into(),
        url.to_owned(),
        "--method".into(),
        method.to_owned(),
        "--connections".into(),
        args.connections.to_string(),
        "--seconds".into(),
        args.seconds.to_string(),
    ];
    if let Some(body) = body {
        loadgen.extend(["--body".to_owned(), body.to_owned()]);
    }
    if let Some(header) = header {
        loadgen.extend(["--header".to_owned(), header.to_owned()]);
    }
    let out = spawn(&loadgen, pin.then_some("1"), false, &[])?.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// A one-off `POST` with a JSON body; returns the response body.
fn http_post(addr: &str, path: &str, body: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    Ok(response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn spawn(command: &[String], cpu: Option<&str>, quiet_stderr: bool, env: &[(&str, &str)]) -> Result<Child, String> {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).args(command);
            c
        }
        None => {
            let (program, rest) = command.split_first().ok_or("empty command")?;
            let mut c = Command::new(program);
            c.args(rest);
            c
        }
    };
    cmd.envs(env.iter().copied());
    cmd.stdout(Stdio::piped()).stderr(if quiet_stderr { Stdio::null() } else { Stdio::piped() });
    cmd.spawn().map_err(|e| format!("{}: {e}", command.join(" ")))
}

/// Both servers print a line ending in `http://<addr>` once they listen.
fn read_address(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
    if addr.is_empty() {
        return Err(format!("server did not say where it listens: {line:?}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(addr)
}

/// VmHWM: the most resident memory the process ever had.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // With taskset the pid is taskset's until it execs the server: same pid.
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.load.rps.total_cmp(&b.load.rps));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn which(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}, {rustc}", kernel.trim())
}

fn render(args: &Args, pinned: bool, rows: &[(&str, Vec<&str>, Vec<Measured>)]) -> String {
    let mut out = String::from("# Benchmark results\n\n");
    out += "Written by `bench/run.sh`; do not edit by hand. Figures are medians of the rounds; \
            ratios compare Emporium with the reference server measured in the same invocation \
            (throughput: higher is better; latency and memory: lower is better).\n\n";
    out += &format!("- Machine: {}\n", machine());
    out += &format!(
        "- Load: {} keep-alive connections, {} s measured after 2 s warm-up, {} rounds per server, \
         alternating\n",
        args.connections, args.seconds, args.rounds
    );
    out += &format!(
        "- Placement: {}\n\n",
        if pinned {
            "server on CPU 0, load generator on CPU 1 (taskset)"
        } else {
            "unpinned (taskset not found): server and load generator share the cores"
        }
    );
    out += "| scenario | server | requests | requests/s | p50 ms | p99 ms | errors | body bytes | peak RSS MiB | rps ratio | p99 ratio | RSS ratio |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (scenario, names, measured) in rows {
        let reference = &measured[0];
        for (name, m) in names.iter().zip(measured) {
            let ratio = |a: f64, b: f64| if b > 0.0 && a > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
            let or_dash = |v: f64, digits: usize| if v > 0.0 { format!("{v:.digits$}") } else { "-".into() };
            out += &format!(
                "| {scenario} | {name} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.load.requests,
                m.load.rps,
                or_dash(m.load.p50_ms, 3),
                or_dash(m.load.p99_ms, 3),
                m.load.errors,
                if m.body_bytes > 0 { m.body_bytes.to_string() } else { "-".into() },
                or_dash(m.peak_rss_kib as f64 / 1024.0, 1),
                ratio(m.load.rps, reference.load.rps),
                ratio(m.load.p99_ms, reference.load.p99_ms),
                ratio(m.peak_rss_kib as f64, reference.peak_rss_kib as f64),
            );
        }
    }
    out += "\nReferences: `healthz` and `me` against the bare axum server's fixed JSON route (so `me`'s ratio \
            is the whole cost of routing, token verification and a database read); `login` against raw \
            Argon2id verifications per second at the configured parameters on one core (the target is at \
            least 0.90); product detail and the product list against the same server answering a fixed body as long as Emporium's \
            answer in the same round (the bytes on the wire cost both the same, so the ratio is Emporium's own \
            work: routing, middleware, logs, metrics and the cache or the database); the storefront's pages \
            likewise against a fixed body as long as the page (the page's own work: its API calls in process, \
            each answered from the catalog's response cache where the API caches, and the template); the \
            category page against the fixed route.\n";
    out
}
