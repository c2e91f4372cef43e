//! The checkout benchmark's Markdown section: a table per scenario (metric,
//! Emporium, reference, ratio), the machine and how the figures were made.

use emporium_bench::report::{first_error, machine, num, ratio, row, table};
use kernel::config::mask_url;

use super::checkout_replay::{Pgbench, Reference};
use super::{Args, FLASH_STOCK, Flash, IN_FLIGHT, Measured, Place, WARMUP};


/// The reference throughput and what it is.
fn reference_tps(r: &Reference) -> (f64, &'static str) {
    match r.pgbench {
        Pgbench::Ran(tps) => (tps, "pgbench"),
        _ => (r.replay.per_sec, "replay"),
    }
}

fn reference_line(args: &Args, r: &Reference) -> String {
    let replay = format!(
        "the replay loop ({} tasks, the server's pool size per database) made {:.0} checkouts/s (p50 {} ms, p99 {} ms, {} errors)",
        args.connections,
        r.replay.per_sec,
        num(r.replay.p50_ms, 2),
        num(r.replay.p99_ms, 2),
        r.replay.errors
    );
    let pgbench = match &r.pgbench {
        Pgbench::NotPostgres => "pgbench does not apply to SQLite; the reference is the replay loop".to_owned(),
        Pgbench::Missing => "pgbench is not on PATH; the reference is the replay loop".to_owned(),
        Pgbench::Failed(e) => format!("pgbench failed ({e}); the reference is the replay loop"),
        Pgbench::Ran(tps) => format!("`pgbench -n -c {} -j 2 -T {}` on the same statements: {tps:.0} tps (the reference)", args.connections, args.seconds),
    };
    format!("{replay}; {pgbench}")
}

pub fn render(args: &Args, place: &Place, m: &Measured, r: &Reference) -> String {
    let database = match &place.admin {
        Some(url) => format!("PostgreSQL at {} (fresh databases made and dropped by the run)", mask_url(url)),
        None => "SQLite, one file per service in a fresh folder".to_owned(),
    };
    let mut out = String::from("\n## Checkout\n\nWritten by `checkout-bench`: a release `emporium serve` on a fresh data folder, set up over the admin API, driven by guest shoppers over HTTP/1.1 keep-alive; nothing is pinned (server, database and client share the machine).\n\n");
    out += &format!("- Machine: {}\n- Database: {database}\n", machine());
    out += &format!("- Load: {} concurrent shoppers, {} s measured after {} s warm-up\n", args.connections, args.seconds, WARMUP.as_secs());
    out += &format!("- Reference: the checkout's statements replayed without HTTP or the service; {}\n", reference_line(args, r));
    let add = &m.add;
    out += &table("Add to cart (one unit per request, each shopper its own cart)", &[
        row("requests/s", num(add.per_sec, 0), "-".into(), "-".into()),
        row("p50 ms", num(add.p50_ms, 2), "-".into(), "-".into()),
        row("p99 ms", num(add.p99_ms, 2), "-".into(), "-".into()),
        row("errors", add.errors.to_string(), "-".into(), "-".into()),
    ]);
    out += &first_error("add to cart", &add.first_error);
    let (tps, source) = reference_tps(r);
    let (req, flow, rep) = (&m.request, &m.flow, &r.replay);
    out += &table("Full checkout (create cart, add item, email, address, shipping method, checkout)", &[
        row("paid checkouts/s", num(flow.per_sec, 0), format!("{} ({source})", num(tps, 0)), ratio(flow.per_sec, tps)),
        row("checkout request p50 ms", num(req.p50_ms, 2), num(rep.p50_ms, 2), ratio(req.p50_ms, rep.p50_ms)),
        row("checkout request p99 ms", num(req.p99_ms, 2), num(rep.p99_ms, 2), ratio(req.p99_ms, rep.p99_ms)),
        row("whole flow p50 ms", num(flow.p50_ms, 2), "-".into(), "-".into()),
        row("whole flow p99 ms", num(flow.p99_ms, 2), "-".into(), "-".into()),
        row("errors", flow.errors.to_string(), rep.errors.to_string(), "-".into()),
    ]);
    out += &first_error("checkout", &flow.first_error);
    out += &first_error("replay", &rep.first_error);
    out += &flash_table(&m.flash);
    let c = &m.counted;
    out += &table("Database work of one checkout (counted from a server's statement log; see below)", &[
        row("statements, request path", c.request_statements.to_string(), "-".into(), "-".into()),
        row("transactions, request path", c.request_transactions.to_string(), "-".into(), "-".into()),
        row("statements, with consumers and relays", c.total_statements.to_string(), "-".into(), "-".into()),
        row("transactions, with consumers and relays", c.total_transactions.to_string(), "-".into(), "-".into()),
    ]);
    out += &format!(
        "\nCounted on a server of its own started with `EMPORIUM_LOG=warn,platform::http=info,platform::db=debug` (the request span is at info): every statement the services run \
         goes through `on_db!`, `on_write!` or `on_tx!`, which log it, and every transaction through `Db::begin`, which logs it. The \
         request path is the lines of the checkout request's id (the Idempotency-Key's record included); the total is every line in the \
         {} s after it less the idle shop's {} statements in as long a window just before (sweeps, gauges, relays' polls).\n",
        super::checkout_count::SETTLE.as_secs(),
        c.idle_statements
    );
    out += "\nRatios: throughput, higher is better; latency, lower is better. The replay runs, per checkout, the statements of `Orders::checkout` \
            in their transactions (the cart row the flow made; the catalog's reserve; create_order; the test gateway's charge; apply_outcome's \
            paid transaction; the catalog's commit; the order's stock mark) with the same ids, values and outbox events, against freshly \
            migrated databases of the same kind. Left out: the reads that price the cart and render the answer, and the Idempotency-Key record. \
            In the flash-sale table the reference column holds what a correct shop must show.\n";
    out
}

fn flash_table(f: &Flash) -> String {
    let want = f.expected_paid();
    let yes_no = |b: bool| String::from(if b { "**yes**" } else { "no" });
    let mut out = table(
        &format!("Flash sale ({} buyers, one SKU with {FLASH_STOCK} units, carts ready first, then all check out at once; at most {IN_FLIGHT} requests in flight so the client keeps to its sockets)", f.buyers),
        &[
            row("orders/s (paid ÷ checkout wall time)", num(f.paid as f64 / f.seconds.max(1e-9), 0), "-".into(), "-".into()),
            row("checkout p99 ms", num(f.p99_ms, 2), "-".into(), "-".into()),
            row("checkout wall time s", num(f.seconds, 3), "-".into(), "-".into()),
            row("paid orders", f.paid.to_string(), want.to_string(), "-".into()),
            row("409 out_of_stock", f.out_of_stock.to_string(), (f.buyers - want).to_string(), "-".into()),
            row("other failures", f.failed.to_string(), "0".into(), "-".into()),
            row("on hand / reserved after", format!("{} / {}", f.on_hand, f.reserved), format!("{} / 0", FLASH_STOCK - want as i64), "-".into()),
            row("oversold", yes_no(f.oversold()), "no".into(), "-".into()),
        ],
    );
    out += &first_error("flash sale", &f.first_failure);
    out
}
