//! A closed-loop HTTP/1.1 load generator: N keep-alive connections, each
//! sending its next request when the last answer arrived, for a fixed time.
//! Prints one JSON line: requests, errors, requests/s, p50/p90/p99 latency.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Parser, Clone)]
#[command(about = "Closed-loop HTTP load generator for Emporium's benchmarks")]
struct Args {
    /// Full URL, e.g. http://127.0.0.1:8080/healthz
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before measuring (connections, caches, allocator warm up).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value = "GET")]
    method: String,
    /// A JSON request body (sent with `content-type: application/json`).
    #[arg(long)]
    body: Option<String>,
    /// Extra request headers, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(serde::Serialize)]
struct Report {
    url: String,
    connections: usize,
    seconds: f64,
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

struct Target {
    addr: String,
    host: String,
    path: String,
    method: hyper::Method,
    body: Option<Bytes>,
    headers: Vec<(String, String)>,
}

fn parse(args: &Args) -> Result<Target, String> {
    let rest = args.url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let method = args.method.parse::<hyper::Method>().map_err(|e| e.to_string())?;
    let headers = args
        .headers
        .iter()
        .map(|h| h.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).ok_or(format!("bad header {h}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Target {
        addr: host.to_owned(),
        host: host.to_owned(),
        path: path.to_owned(),
        method,
        body: args.body.clone().map(Bytes::from),
        headers,
    })
}

/// One connection's loop; returns the latencies (µs) measured after `measure_from`.
async fn connection(target: std::sync::Arc<Target>, measure_from: Instant, until: Instant) -> (Vec<u32>, usize) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    'reconnect: while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(&target.addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let mut builder = Request::builder()
                .method(target.method.clone())
                .uri(target.path.as_str())
                .header("host", target.host.as_str());
            for (name, value) in &target.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            if target.body.is_some() {
                builder = builder.header("content-type", "application/json");
            }
            let body = target.body.clone().unwrap_or_default();
            let Ok(request) = builder.body(Full::new(body)) else {
                errors += 1;
                break 'reconnect;
            };
            let started = Instant::now();
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let success = response.status().is_success();
                    success && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            };
            let elapsed = started.elapsed();
            if started >= measure_from {
                if ok {
                    latencies.push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    errors += 1;
                }
            }
            if !ok {
                continue 'reconnect;
            }
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let target = std::sync::Arc::new(parse(&args)?);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(connection(target.clone(), measure_from, until)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await.map_err(|e| e.to_string())?;
        all.extend(lat);
        errors += err;
    }
    all.sort_unstable();
    let seconds = args.seconds as f64;
    let report = Report {
        url: args.url,
        connections: args.connections,
        seconds,
        requests: all.len(),
        errors,
        rps: all.len() as f64 / seconds,
        p50_ms: percentile(&all, 50.0),
        p90_ms: percentile(&all, 90.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: all.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    };
    println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    Ok(())
}
