//! Statements and transactions of one checkout, read from the log of a
//! server of its own: every statement the services run goes through
//! `on_db!`, `on_write!` or `on_tx!`, which note it (`platform::db`, debug),
//! and `Db::begin` notes every transaction, each in the span of the request
//! that ran it. The request path is the lines of the checkout's own request
//! id; the total adds what the event consumers and outbox relays did in the
//! seconds after it, less what the idle shop did in a window of the same
//! length just before.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{Api, PAYMENT, Place, fill_cart, paid, probe, set_up, sign_in, start_server, stop};

/// The log filter of the counting server.
const FILTER: &str = "warn,platform::http=info,platform::db=debug";
/// The request id the counted checkout is sent with.
const REQUEST_ID: &str = "bench-counted-checkout";
/// How long the shop is left to settle (consumers, relays) after each step.
pub const SETTLE: Duration = Duration::from_secs(3);

/// What one checkout cost the databases.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counted {
    pub request_statements: usize,
    pub request_transactions: usize,
    /// Request path, consumers and relays, less the idle shop's.
    pub total_statements: i64,
    pub total_transactions: i64,
    /// What the idle shop ran in a window of the same length (subtracted).
    pub idle_statements: usize,
}

#[derive(Default)]
struct Tally {
    statements: usize,
    transactions: usize,
}

/// The statements and transactions in `lines`, of `request` only when given.
fn tally(lines: &str, request: Option<&str>) -> Tally {
    let mut t = Tally::default();
    for line in lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if request.is_some_and(|id| v["span"]["request_id"].as_str() != Some(id)) {
            continue;
        }
        if v["target"] == "platform::db" {
            match v["message"].as_str() {
                Some("statement") => t.statements += 1,
                Some("transaction") => t.transactions += 1,
                _ => {}
            }
        }
    }
    t
}

/// How many statements of `request` each place in the code ran, most first.
fn places(lines: &str, request: &str) -> String {
    let mut at: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for line in lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if v["span"]["request_id"] == request && v["target"] == "platform::db" && v["message"] == "statement" {
            *at.entry(v["at"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
    }
    let mut at: Vec<(String, usize)> = at.into_iter().collect();
    at.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    at.iter().map(|(place, n)| format!("  {n:>3}  {place}")).collect::<Vec<_>>().join("\n")
}

fn read_from(log: &Path, offset: usize) -> Result<(String, usize), String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let from = offset.min(text.len());
    Ok((text[from..].to_owned(), text.len()))
}

/// Starts a counting server in `place`'s part `count`, checks out once and counts.
pub async fn count(bins: &Path, place: &Place) -> Result<Counted, String> {
    let log = place.dir.join("count.log");
    let (child, addr) = start_server(bins, place, "count", Some((&log, FILTER)))?;
    let counted = count_on(&addr, &log).await;
    stop(child);
    counted
}

async fn count_on(addr: &str, log: &Path) -> Result<Counted, String> {
    let api = Api::new(addr)?;
    let admin = sign_in(&api).await?;
    let method = set_up(&admin).await?;
    probe(&api, &method).await?;
    let cart = fill_cart(&api, super::CHECKOUT_SKU, &method).await?;
    tokio::time::sleep(SETTLE).await;
    let (_, start) = read_from(log, 0)?;
    tokio::time::sleep(SETTLE).await;
    let (idle, start) = read_from(log, start)?;
    let idle = tally(&idle, None);
    let key = kernel::id::Uuid::now_v7().simple().to_string();
    let headers = [("x-cart-secret", cart.secret.as_str()), ("idempotency-key", key.as_str()), ("x-request-id", REQUEST_ID)];
    let reply = api.send(Method::POST, &format!("/api/v1/carts/{}/checkout", cart.id), Some(PAYMENT.into()), &headers).await?;
    if !paid(&reply) {
        return Err(reply.describe("counted checkout"));
    }
    tokio::time::sleep(SETTLE).await;
    let (after, _) = read_from(log, start)?;
    let request = tally(&after, Some(REQUEST_ID));
    eprintln!("statements of the checkout request, by place:\n{}", places(&after, REQUEST_ID));
    let all = tally(&after, None);
    if request.statements == 0 {
        return Err(format!("no statement of the counted checkout in {} (is `{FILTER}` honoured?)", log.display()));
    }
    Ok(Counted {
        request_statements: request.statements,
        request_transactions: request.transactions,
        total_statements: all.statements as i64 - idle.statements as i64,
        total_transactions: all.transactions as i64 - idle.transactions as i64,
        idle_statements: idle.statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statements_and_transactions_of_a_request() {
        let lines = [
            r#"{"target":"platform::db","message":"transaction","span":{"request_id":"r1"}}"#,
            r#"{"target":"platform::db","message":"statement","span":{"request_id":"r1"}}"#,
            r#"{"target":"platform::db","message":"statement","span":{"request_id":"r1"}}"#,
            r#"{"target":"platform::db","message":"statement"}"#,
            r#"{"target":"platform::db","message":"transaction","span":{"request_id":"r2"}}"#,
            r#"{"target":"access","message":"request finished","span":{"request_id":"r1"}}"#,
            "not json",
        ]
        .join("\n");
        let mine = tally(&lines, Some("r1"));
        assert_eq!((mine.statements, mine.transactions), (2, 1));
        let all = tally(&lines, None);
        assert_eq!((all.statements, all.transactions), (3, 2));
    }
}
