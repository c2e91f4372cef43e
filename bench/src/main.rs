//! Runs the benchmark scenarios: starts the reference server and Emporium
//! (release builds, next to this binary), drives each with `loadgen` on its
//! own core, reads the servers' peak RSS, and writes `bench/RESULTS.md` with
//! every figure also given as a ratio to the reference measured in the same
//! invocation.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Emporium benchmark runner (see bench/README.md)")]
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
}

/// A server under test, started fresh for each run.
struct Server {
    name: &'static str,
    command: Vec<String>,
    path: &'static str,
}

/// One scenario: the same request against Emporium and against the reference.
struct Scenario {
    name: &'static str,
    emporium_path: &'static str,
    reference_path: &'static str,
}

const SCENARIOS: &[Scenario] = &[Scenario { name: "healthz", emporium_path: "/healthz", reference_path: "/healthz" }];

fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no folder for the binaries")?;
    let pin = which("taskset");
    let data = std::env::temp_dir().join(format!("emporium-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        let servers = [
            Server {
                name: "reference",
                command: vec![dir.join("bench-ref").display().to_string()],
                path: scenario.reference_path,
            },
            Server {
                name: "emporium",
                command: vec![
                    dir.join("emporium").display().to_string(),
                    "serve".into(),
                    "--bind".into(),
                    "127.0.0.1:0".into(),
                    "--data-dir".into(),
                    data.display().to_string(),
                ],
                path: scenario.emporium_path,
            },
        ];
        let mut results: Vec<Vec<Measured>> = servers.iter().map(|_| Vec::new()).collect();
        // Alternate the servers round by round, so drift in the machine's
        // state affects both alike.
        for round in 0..args.rounds {
            for (i, server) in servers.iter().enumerate() {
                eprintln!("{} / {} / round {}", scenario.name, server.name, round + 1);
                results[i].push(measure(server, &dir, &args, pin)?);
            }
        }
        let medians: Vec<Measured> = results.into_iter().map(median).collect();
        rows.push((scenario.name, servers.iter().map(|s| s.name).collect::<Vec<_>>(), medians));
    }
    let _ = std::fs::remove_dir_all(&data);
    let report = render(&args, pin, &rows);
    std::fs::write(&args.out, &report).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("{report}");
    Ok(())
}

fn measure(server: &Server, dir: &Path, args: &Args, pin: bool) -> Result<Measured, String> {
    let mut child = spawn(&server.command, pin.then_some("0"), true)?;
    let result = (|| {
        let addr = read_address(&mut child)?;
        let loadgen = vec![
            dir.join("loadgen").display().to_string(),
            "--url".into(),
            format!("http://{addr}{}", server.path),
            "--connections".into(),
            args.connections.to_string(),
            "--seconds".into(),
            args.seconds.to_string(),
        ];
        let out = spawn(&loadgen, pin.then_some("1"), false)?
            .wait_with_output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let load: Load = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let peak_rss_kib = peak_rss_kib(child.id()).ok_or("cannot read the server's peak RSS")?;
        Ok(Measured { load, peak_rss_kib })
    })();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    result
}

fn spawn(command: &[String], cpu: Option<&str>, quiet_stderr: bool) -> Result<Child, String> {
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
    out += "| scenario | server | requests | requests/s | p50 ms | p99 ms | errors | peak RSS MiB | rps ratio | p99 ratio | RSS ratio |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (scenario, names, measured) in rows {
        let reference = &measured[0];
        for (name, m) in names.iter().zip(measured) {
            let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "-".into() };
            out += &format!(
                "| {scenario} | {name} | {} | {:.0} | {:.3} | {:.3} | {} | {:.1} | {} | {} | {} |\n",
                m.load.requests,
                m.load.rps,
                m.load.p50_ms,
                m.load.p99_ms,
                m.load.errors,
                m.peak_rss_kib as f64 / 1024.0,
                ratio(m.load.rps, reference.load.rps),
                ratio(m.load.p99_ms, reference.load.p99_ms),
                ratio(m.peak_rss_kib as f64, reference.peak_rss_kib as f64),
            );
        }
    }
    out
}
