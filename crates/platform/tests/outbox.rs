//! The transactional outbox: an event is published iff its transaction
//! committed; a process killed between commit and publish loses nothing;
//! a redelivered event takes effect once; JetStream works across processes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{BusError, EventBus, EventHandler, InProcessBus, JetStreamBus};
use platform::db::{Db, DbOptions};
use platform::on_db;
use platform::outbox::Relay;
use platform::testing::{self, Sandbox};
use support::{EFFECTS, Recorder, commit, event, unpublished};
use tokio_util::sync::CancellationToken;

fn relay(db: &Db, bus: Arc<dyn EventBus>) -> Relay {
    Relay::new(db.clone(), bus, 100, Duration::from_millis(50))
}

#[tokio::test]
async fn an_event_is_published_if_and_only_if_its_transaction_commits() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[]).await;
    let bus = Arc::new(InProcessBus::new());
    let recorder = Recorder::new("search");
    bus.subscribe(recorder.clone(), CancellationToken::new()).await.unwrap();

    let committed = event("order.placed");
    commit(&db, &committed).await;
    let rolled_back = event("order.placed");
    let mut tx = db.begin().await.unwrap();
    platform::outbox::enqueue(&mut tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    let dropped = event("order.placed");
    {
        let mut tx = db.begin().await.unwrap();
        platform::outbox::enqueue(&mut tx, &dropped).await.unwrap();
        // dropped without commit: as good as a rollback
    }

    assert_eq!(relay(&db, bus.clone()).drain().await.unwrap(), 1);
    assert_eq!(recorder.ids().await, vec![committed.id.to_string()]);
    assert_eq!(unpublished(&db).await, 0);
    assert_eq!(relay(&db, bus).drain().await.unwrap(), 0, "published once");
}

#[tokio::test]
async fn published_events_are_forgotten_after_their_retention_and_pending_ones_never() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[]).await;
    let bus = Arc::new(InProcessBus::new());
    commit(&db, &event("order.placed")).await;
    commit(&db, &event("order.paid")).await;
    assert_eq!(relay(&db, bus).drain().await.unwrap(), 2);
    commit(&db, &event("order.placed")).await; // not published yet
    let all = || async { on_db!(db, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox").fetch_one(pool).await).unwrap() };
    let an_hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert_eq!(platform::outbox::purge_published(&db, an_hour_ago).await.unwrap(), 0, "kept until the retention passes");
    assert_eq!(all().await, 3);
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    assert_eq!(platform::outbox::purge_published(&db, soon).await.unwrap(), 2);
    assert_eq!(all().await, 1);
    assert_eq!(unpublished(&db).await, 1, "what is still to be published stays");
}

#[tokio::test]
async fn the_relay_wakes_on_commit_and_flushes_on_shutdown() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[]).await;
    let bus = Arc::new(InProcessBus::new());
    let recorder = Recorder::new("notify");
    bus.subscribe(recorder.clone(), CancellationToken::new()).await.unwrap();
    let stop = CancellationToken::new();
    // A poll interval of an hour: only the commit's bell can wake it.
    let running = tokio::spawn(Relay::new(db.clone(), bus.clone(), 10, Duration::from_secs(3600)).run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = event("order.paid");
    commit(&db, &first).await;
    assert_eq!(recorder.wait_for(1).await, vec![first.id.to_string()]);

    // Events committed while the relay is stopping are still published.
    let last = event("order.paid");
    commit(&db, &last).await;
    stop.cancel();
    running.await.unwrap();
    assert_eq!(recorder.ids().await.len(), 2);
    assert_eq!(unpublished(&db).await, 0);
}

#[tokio::test]
async fn a_failing_consumer_gets_the_event_again_and_applies_it_once() {
    let sandbox = Sandbox::new().await;
    let producer = sandbox.db("orders", &[]).await;
    let consumer_db = sandbox.db("search", &[&EFFECTS]).await;
    let bus = Arc::new(InProcessBus::new());
    let flaky = Recorder::build("search", "order.*", 2, Some(consumer_db));
    bus.subscribe(flaky.clone(), CancellationToken::new()).await.unwrap();

    let e = event("order.placed");
    commit(&producer, &e).await;
    let relay = relay(&producer, bus.clone());
    assert!(relay.drain().await.is_err(), "first attempt fails");
    assert_eq!(unpublished(&producer).await, 1, "not marked published while undelivered");
    assert!(relay.drain().await.is_err());
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(flaky.effects(&e.id.to_string()).await, 1);

    // Redelivery of an event already applied has no second effect, even when
    // copies arrive at once.
    let mut copies = Vec::new();
    for _ in 0..8 {
        let (bus, e) = (bus.clone(), e.clone());
        copies.push(tokio::spawn(async move { bus.publish(&e).await }));
    }
    for c in copies {
        c.await.unwrap().unwrap();
    }
    assert_eq!(flaky.effects(&e.id.to_string()).await, 1);
}

/// A bus whose publish never completes: the child below dies inside it.
struct Stuck;

#[async_trait]
impl EventBus for Stuck {
    async fn publish(&self, _: &Envelope) -> Result<(), BusError> {
        std::future::pending().await
    }
    async fn subscribe(&self, _: Arc<dyn EventHandler>, _: CancellationToken) -> Result<(), BusError> {
        Ok(())
    }
    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "stuck"
    }
}

/// Runs one of this file's helper "processes" (an ignored test) as a child.
fn child(test: &str, envs: &[(&str, &str)]) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's stdout until a line starting with `prefix`.
fn read_marker(child: &mut std::process::Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // The harness prints "test name ... " on the same line first.
        if let Some(at) = line.find(prefix) {
            let rest = &line[at + prefix.len()..];
            // Keep reading what the child prints after, so it never writes
            // into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    }
    panic!("child exited without printing {prefix}");
}

#[tokio::test]
async fn a_process_killed_between_commit_and_publish_loses_nothing() {
    let sandbox = Sandbox::new().await;
    let url = sandbox.url_for("orders");
    drop(sandbox.db("orders", &[]).await);

    let mut process = child("child_commits_then_hangs_in_publish", &[("EMPORIUM_CHILD_DB", &url)]);
    let id = read_marker(&mut process, "COMMITTED ");
    process.kill().unwrap(); // SIGKILL: no destructor, no shutdown, no flush
    process.wait().unwrap();

    let db = Db::connect(&url, "orders", &DbOptions::default()).await.unwrap();
    assert_eq!(unpublished(&db).await, 1, "the committed event waits in the outbox");
    let bus = Arc::new(InProcessBus::new());
    let recorder = Recorder::new("notify");
    bus.subscribe(recorder.clone(), CancellationToken::new()).await.unwrap();
    relay(&db, bus).drain().await.unwrap();
    assert_eq!(recorder.ids().await, vec![id]);
}

#[tokio::test]
#[ignore = "helper process for a_process_killed_between_commit_and_publish_loses_nothing"]
async fn child_commits_then_hangs_in_publish() {
    let url = std::env::var("EMPORIUM_CHILD_DB").unwrap();
    let db = Db::connect(&url, "orders", &DbOptions::default()).await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(Relay::new(db.clone(), Arc::new(Stuck), 10, Duration::from_millis(10)).run(stop));
    let e = event("order.placed");
    commit(&db, &e).await;
    println!("COMMITTED {}", e.id);
    running.await.unwrap();
}

#[tokio::test]
async fn jetstream_delivers_across_processes() {
    let Some(nats) = testing::nats_url() else {
        eprintln!("EMPORIUM_TEST_NATS_URL unset: runs in CI's PostgreSQL + NATS pass");
        return;
    };
    let sandbox = Sandbox::new().await;
    let (stream, prefix) = sandbox.stream();
    let consumer_db = sandbox.db("search", &[&EFFECTS]).await;
    let bus = JetStreamBus::connect(&nats, &stream, &prefix).await.unwrap();
    // Fails once, so the server has to redeliver.
    let recorder = Recorder::build("search", "product.*", 1, Some(consumer_db));
    bus.subscribe(recorder.clone(), CancellationToken::new()).await.unwrap();

    let url = sandbox.url_for("catalog");
    let mut process = child(
        "child_publishes_through_jetstream",
        &[("EMPORIUM_CHILD_DB", &url), ("EMPORIUM_CHILD_NATS", &nats),
          ("EMPORIUM_CHILD_STREAM", &stream), ("EMPORIUM_CHILD_PREFIX", &prefix)],
    );
    let id = read_marker(&mut process, "PUBLISHED ");
    assert!(process.wait().unwrap().success());

    let seen = recorder.wait_for(2).await;
    assert_eq!(seen, vec![id.clone(), id.clone()], "delivered, failed, redelivered");
    assert_eq!(recorder.settled_effects(&id).await, 1);
}

#[tokio::test]
#[ignore = "helper process for jetstream_delivers_across_processes"]
async fn child_publishes_through_jetstream() {
    let var = |k: &str| std::env::var(k).unwrap();
    let db = Db::connect(&var("EMPORIUM_CHILD_DB"), "catalog", &DbOptions::default()).await.unwrap();
    platform::migrate::migrate(&db, &[&platform::migrate::PLATFORM]).await.unwrap();
    let bus = JetStreamBus::connect(&var("EMPORIUM_CHILD_NATS"), &var("EMPORIUM_CHILD_STREAM"), &var("EMPORIUM_CHILD_PREFIX"))
        .await
        .unwrap();
    let e = event("product.updated");
    commit(&db, &e).await;
    assert_eq!(relay(&db, Arc::new(bus)).drain().await.unwrap(), 1);
    println!("PUBLISHED {}", e.id);
}
