//! The notify service: email, SMS and merchant webhooks, driven by events.
//! This is its face: the spec the binary mounts (routes, migrations,
//! consumer), the service handle, and the catalog port it asks.
//!
//! An event becomes rows in `deliveries` (rendered, deduplicated, in the
//! transaction that marks the event handled); the sender takes due rows,
//! tries them, and retries with back-off until they are sent or dead. A slow
//! or failing provider therefore never holds up the event consumer.

mod channels;
pub mod domain;
mod error;
mod events;
mod http;
mod sender;
mod store;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kernel::config::Config;
use platform::db::Db;
use platform::migrate::Migrations;
use platform::routes::Route;
use platform::service::{BoxError, BoxFuture, Mounted, Ports, ServiceContext, ServiceSpec};
use serde_json::Value;

pub use channels::SetupError;
pub use error::NotifyError;

use crate::channels::{DevMailbox, EmailTransport, HttpSms, Smtp, SmsTransport, Webhooks};
use crate::templates::Source;

pub const NAME: &str = "notify";

/// Every path the service answers, for the load balancer's route map
/// (`emporium deploy nginx`); a test holds it to the router.
pub const ROUTES: &[Route] = &[
    Route::public("/api/v1/admin/mailbox"),
    Route::public("/api/v1/admin/mailbox/{id}"),
    Route::public("/api/v1/admin/notification-templates"),
    Route::public("/api/v1/admin/notification-templates/{key}"),
    Route::public("/api/v1/admin/notification-templates/{key}/preview"),
    Route::public("/api/v1/admin/notifications"),
    Route::public("/api/v1/admin/notifications/{id}"),
    Route::public("/api/v1/admin/notifications/{id}/retry"),
    Route::public("/api/v1/admin/webhooks"),
    Route::public("/api/v1/admin/webhooks/{id}"),
    Route::public("/api/v1/admin/webhooks/{id}/test"),
    Route::public("/api/v1/me/notification-preferences"),
    Route::public("/api/v1/products/{id}/notify-me"),
    Route::public("/api/v1/unsubscribe"),
];

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("notify", ["0001_notify", "0002_private", "0003_webhook_reasons"]);

/// A product as a back-in-stock alert needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub active: bool,
    pub skus: Vec<String>,
    pub in_stock: bool,
}

/// What notify asks of the catalog (provided by the binary: in process, or over HTTP).
#[async_trait]
pub trait Products: Send + Sync + 'static {
    async fn product(&self, id: &str) -> Result<Option<ProductInfo>, BoxError>;
}

/// The service: its database, its channels and the sender's doorbell.
#[derive(Clone)]
pub struct Notify {
    pub db: Db,
    config: Arc<Config>,
    email: Arc<dyn EmailTransport>,
    sms: Arc<dyn SmsTransport>,
    webhooks: Arc<Webhooks>,
    key: Arc<Vec<u8>>,
    wake: Arc<tokio::sync::Notify>,
    ports: Ports,
    /// Back-in-stock requests per address.
    limits: platform::limit::Limits,
}

impl Notify {
    /// Opens the channels the configuration names (the dev mailbox for any it does not).
    pub async fn new(db: Db, config: Arc<Config>, ports: Ports) -> Result<Self, BoxError> {
        let n = &config.notify;
        let mailbox =
            Arc::new(DevMailbox { db: db.clone(), from: n.mail_from.clone(), sms_from: n.sms_from.clone().unwrap_or_default() });
        let email: Arc<dyn EmailTransport> = match &n.smtp_url {
            Some(url) => Arc::new(Smtp::new(url, &n.mail_from, n.smtp_ca_file.as_deref())?),
            None => mailbox.clone(),
        };
        let sms: Arc<dyn SmsTransport> = match (&n.sms_url, &n.sms_account, &n.sms_token, &n.sms_from) {
            (Some(url), Some(account), Some(token), Some(from)) => Arc::new(HttpSms::new(url, account, token, from)?),
            _ => mailbox,
        };
        let key = match &n.signing_key {
            Some(k) => k.as_bytes().to_vec(),
            None => {
                let fresh = domain::random_hex(32)?;
                store::setting_or_insert(&db, "unsubscribe_key", &fresh).await?.into_bytes()
            }
        };
        let webhooks = Webhooks::new(n.webhooks_allow_private)?;
        tracing::info!(email = email.kind(), sms = sms.kind(), "notification channels");
        Ok(Self {
            db,
            config,
            email,
            sms,
            webhooks: Arc::new(webhooks),
            key: Arc::new(key),
            wake: Arc::new(tokio::sync::Notify::new()),
            limits: platform::limit::Limits::from_ports(&ports),
            ports,
        })
    }

    fn shop_url(&self) -> String {
        self.config.public_url().trim_end_matches('/').to_owned()
    }

    fn products(&self) -> Option<Arc<dyn Products>> {
        self.ports.get::<dyn Products>()
    }

    /// The template staff saved under `key`, else the shipped one.
    pub async fn source(&self, key: &str) -> Result<Option<Source>, NotifyError> {
        if let Some(saved) = store::template(&self.db, key).await? {
            return Ok(Some(saved.source));
        }
        Ok(templates::shipped(key).map(|s| s.source()))
    }

    /// `{shop: {name, url}}`, the part every message's context shares.
    fn shop(&self) -> Value {
        serde_json::json!({"name": self.config.notify.shop_name, "url": self.shop_url()})
    }

    /// Rings the sender: something was queued.
    fn wake(&self) {
        self.wake.notify_one();
    }
}

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: None }
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let notify = Notify::new(ctx.db.clone(), ctx.config.clone(), ctx.ports.clone()).await?;
        tokio::spawn(notify.clone().run_sender(ctx.shutdown.clone()));
        if let Some(readings) = ctx.ports.get::<platform::gauges::Readings>() {
            readings.add(Arc::new(sender::DeliveryGauges { db: ctx.db.clone() }));
        }
        let digest = notify.clone();
        let every = Duration::from_secs(ctx.config.notify.digest_interval_secs.max(1));
        tokio::spawn(platform::worker::every("notify-low-stock-digest".into(), every, ctx.shutdown.clone(), move || {
            let n = digest.clone();
            async move { n.send_digest().await }
        }));
        let router = http::router(notify.clone());
        Ok(Mounted { router, handlers: vec![Arc::new(events::Consumer { notify })] })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed() {
        assert!(platform::migrate::unlisted_files(&super::MIGRATIONS).is_empty());
    }
}
