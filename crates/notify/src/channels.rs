//! Where messages go: SMTP (lettre) or the dev mailbox for email, an HTTP
//! provider with Twilio's Messages API or the dev mailbox for SMS, and
//! merchants' endpoints for webhooks. Each adapter says whether a failure
//! is worth retrying.

use std::time::Duration;

use async_trait::async_trait;
use kernel::id::MailId;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use platform::db::{Db, now_ms};
use serde_json::json;

use crate::domain;
use crate::store::{self, Delivery, Endpoint, Mail};

/// What the other side said when it took a message.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub provider_message_id: Option<String>,
    pub status_code: Option<i32>,
}

/// Why a message did not go, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub permanent: bool,
    pub status_code: Option<i32>,
    pub message: String,
}

impl SendError {
    fn transient(message: impl Into<String>, status_code: Option<i32>) -> Self {
        Self { permanent: false, status_code, message: message.into() }
    }

    fn permanent(message: impl Into<String>, status_code: Option<i32>) -> Self {
        Self { permanent: true, status_code, message: message.into() }
    }
}

#[async_trait]
pub trait EmailTransport: Send + Sync + 'static {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError>;
    fn kind(&self) -> &'static str;
}

#[async_trait]
pub trait SmsTransport: Send + Sync + 'static {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError>;
    fn kind(&self) -> &'static str;
}

/// The headers of a message, as the mailbox shows them and SMTP sends them.
pub fn email_headers(d: &Delivery, from: &str, domain: &str) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("From", from.to_owned()),
        ("To", d.recipient.clone()),
        ("Subject", d.subject.clone()),
        ("Message-ID", message_id(d, domain)),
    ];
    if let Some(url) = &d.unsubscribe_url {
        headers.push(("List-Unsubscribe", format!("<{url}>")));
        headers.push(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()));
    }
    headers
}

fn message_id(d: &Delivery, domain: &str) -> String {
    format!("<{}@{domain}>", d.id)
}

/// Mail and texts kept in the database, for a shop with no provider set up
/// (the demo, a laptop). The console shows them.
pub struct DevMailbox {
    pub db: Db,
    pub from: String,
    pub sms_from: String,
}

impl DevMailbox {
    async fn keep(&self, d: &Delivery, sender: &str, headers: serde_json::Value) -> Result<Sent, SendError> {
        let id = MailId::new().to_string();
        let mail = Mail {
            id: id.clone(),
            delivery_id: d.id.clone(),
            channel: d.channel.clone(),
            sender: sender.to_owned(),
            recipient: d.recipient.clone(),
            subject: d.subject.clone(),
            text: d.body.clone(),
            html: d.html.clone(),
            headers: headers.to_string(),
            created_ms: now_ms(),
        };
        store::insert_mail(&self.db, &mail).await.map_err(|e| SendError::transient(e.to_string(), None))?;
        Ok(Sent { provider_message_id: Some(id), status_code: None })
    }
}

#[async_trait]
impl EmailTransport for DevMailbox {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError> {
        let headers: serde_json::Map<String, serde_json::Value> = email_headers(d, &self.from, "mailbox.invalid")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        self.keep(d, &self.from, serde_json::Value::Object(headers)).await
    }

    fn kind(&self) -> &'static str {
        "mailbox"
    }
}

#[async_trait]
impl SmsTransport for DevMailbox {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError> {
        self.keep(d, &self.sms_from, json!({})).await
    }

    fn kind(&self) -> &'static str {
        "mailbox"
    }
}

/// Email over SMTP: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
/// (STARTTLS), `smtps://user:pass@host:465` (TLS), with a connection pool.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("notify.smtp_url: {0}")]
    SmtpUrl(String),
    #[error("notify.smtp_ca_file: {0}")]
    SmtpCa(String),
    #[error("notify.mail_from `{0}` is not an address (`Shop <shop@example.com>`)")]
    From(String),
    #[error("cannot make an HTTP client: {0}")]
    Http(String),
}

impl Smtp {
    /// `ca_file` adds trusted CA certificates (PEM) for a server with a private certificate.
    pub fn new(url: &str, from: &str, ca_file: Option<&std::path::Path>) -> Result<Self, SetupError> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| SetupError::SmtpUrl(e.to_string()))?
            .timeout(Some(Duration::from_secs(20)));
        if let Some(path) = ca_file {
            let ca = |e: &dyn std::fmt::Display| SetupError::SmtpCa(format!("{}: {e}", path.display()));
            let pem = std::fs::read(path).map_err(|e| ca(&e))?;
            let certificate = Certificate::from_pem(&pem).map_err(|e| ca(&e))?;
            let (host, mode) = tls_of(url);
            let params =
                TlsParameters::builder(host).add_root_certificate(certificate).build_rustls().map_err(|e| ca(&e))?;
            builder = builder.tls(match mode {
                TlsMode::Wrapper => Tls::Wrapper(params),
                TlsMode::Required => Tls::Required(params),
                TlsMode::Opportunistic => Tls::Opportunistic(params),
                TlsMode::None => Tls::None,
            });
        }
        let transport = builder.build();
        let from: Mailbox = from.parse().map_err(|_| SetupError::From(from.to_owned()))?;
        let domain = from.email.domain().to_owned();
        Ok(Self { transport, from, domain })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum TlsMode {
    Wrapper,
    Required,
    Opportunistic,
    None,
}

/// The host and TLS mode an SMTP URL asks for, as lettre reads it:
/// `smtps://` is TLS from the start; `?tls=required` or `?tls=opportunistic` is STARTTLS.
fn tls_of(url: &str) -> (String, TlsMode) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("smtp", url));
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.split('/').next().unwrap_or(authority);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    let tls = query.split('&').find_map(|kv| kv.strip_prefix("tls="));
    let mode = match (scheme, tls) {
        ("smtps", _) => TlsMode::Wrapper,
        (_, Some("required")) => TlsMode::Required,
        (_, Some("opportunistic")) => TlsMode::Opportunistic,
        _ => TlsMode::None,
    };
    (host.to_owned(), mode)
}

#[async_trait]
impl EmailTransport for Smtp {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError> {
        let to: Mailbox = d
            .recipient
            .parse()
            .map_err(|e| SendError::permanent(format!("`{}` is not an address: {e}", d.recipient), None))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(d.subject.clone())
            .message_id(Some(message_id(d, &self.domain)));
        if let Some(url) = &d.unsubscribe_url {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{url}>")))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let message = match &d.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(d.body.clone(), html.clone())),
            None => builder.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(d.body.clone())),
        }
        .map_err(|e| SendError::permanent(format!("cannot build the message: {e}"), None))?;
        match self.transport.send(message).await {
            Ok(response) => Ok(Sent {
                provider_message_id: Some(message_id(d, &self.domain)),
                status_code: Some(i32::from(u16::from(response.code()))),
            }),
            Err(e) => {
                let code = e.status().map(|c| i32::from(u16::from(c)));
                if e.is_permanent() {
                    Err(SendError::permanent(format!("the mail server refused it: {e}"), code))
                } else {
                    Err(SendError::transient(format!("the mail server did not take it: {e}"), code))
                }
            }
        }
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

/// Texts through an HTTP provider with Twilio's Messages API:
/// `POST {base}/2010-04-01/Accounts/{account}/Messages.json`, basic auth,
/// form fields `To`, `From`, `Body`; the answer's `sid` is the message id.
pub struct HttpSms {
    client: reqwest::Client,
    endpoint: String,
    account: String,
    token: String,
    from: String,
}

impl HttpSms {
    pub fn new(base: &str, account: &str, token: &str, from: &str) -> Result<Self, SetupError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| SetupError::Http(e.to_string()))?;
        let endpoint = format!("{}/2010-04-01/Accounts/{account}/Messages.json", base.trim_end_matches('/'));
        Ok(Self { client, endpoint, account: account.into(), token: token.into(), from: from.into() })
    }
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[async_trait]
impl SmsTransport for HttpSms {
    async fn send(&self, d: &Delivery) -> Result<Sent, SendError> {
        let body = form_encode(&[("To", &d.recipient), ("From", &self.from), ("Body", &d.body)]);
        let response = self
            .client
            .post(&self.endpoint)
            .basic_auth(&self.account, Some(&self.token))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("the SMS provider is unreachable: {e}"), None))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if (200..300).contains(&status) {
            let sid = answer.get("sid").and_then(|s| s.as_str()).map(str::to_owned);
            return Ok(Sent { provider_message_id: sid, status_code: Some(i32::from(status)) });
        }
        let why = answer.get("message").and_then(|m| m.as_str()).unwrap_or("no reason given");
        let message = format!("the SMS provider answered {status}: {why}");
        // Too many requests and server errors pass; other refusals (a bad number, say) do not.
        if status == 429 || status >= 500 {
            Err(SendError::transient(message, Some(i32::from(status))))
        } else {
            Err(SendError::permanent(message, Some(i32::from(status))))
        }
    }

    fn kind(&self) -> &'static str {
        "http"
    }
}

/// An endpoint's address that is not public (loopback, private, link-local, ...).
#[derive(Debug, thiserror::Error)]
#[error("the endpoint's address is not a public one")]
pub struct NotPublic;

/// Resolves endpoints' host names and answers their addresses only when
/// every one is public: the client connects only to an address checked
/// here, so a name that is public when saved and private when used (DNS
/// rebinding) reaches nothing inside.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || !addrs.iter().all(|a| domain::public_ip(a.ip())) {
                return Err(Box::new(NotPublic) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL's host is a literal IP that is not public (names are left to [`PublicOnly`]).
fn literal_ip_refused(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return true };
    let host = parsed.host_str().unwrap_or_default();
    host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| !domain::public_ip(ip))
}

/// Posts webhook deliveries, signed with the endpoint's secret.
pub struct Webhooks {
    client: reqwest::Client,
    allow_private: bool,
}

impl Webhooks {
    /// `allow_private` (development only) lets endpoints be on loopback and private networks.
    pub fn new(allow_private: bool) -> Result<Self, SetupError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the check.
            .no_proxy()
            .user_agent(concat!("Emporium-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(PublicOnly);
        }
        let client = builder.build().map_err(|e| SetupError::Http(e.to_string()))?;
        Ok(Self { client, allow_private })
    }

    /// Any 2xx is delivered; anything else, or no answer in 10 s, is retried.
    /// An address that is not public fails for good.
    pub async fn post(&self, endpoint: &Endpoint, d: &Delivery) -> Result<Sent, SendError> {
        if !self.allow_private && literal_ip_refused(&endpoint.url) {
            return Err(SendError::permanent(NotPublic.to_string(), None));
        }
        let now = now_ms() / 1000;
        let signature = domain::webhook_signature(&endpoint.secret, now, &d.body);
        let response = self
            .client
            .post(&endpoint.url)
            .header("Content-Type", "application/json")
            .header("Emporium-Signature", signature)
            .header("Emporium-Event-Id", d.event_id.clone().unwrap_or_default())
            .header("Emporium-Event-Type", &d.event_type)
            .header("Emporium-Delivery-Id", &d.id)
            .body(d.body.clone())
            .send()
            .await
            .map_err(|e| match refused_address(&e) {
                true => SendError::permanent(NotPublic.to_string(), None),
                false => SendError::transient(format!("no answer from the endpoint: {e}"), None),
            })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(Sent { provider_message_id: None, status_code: Some(i32::from(status)) })
        } else {
            Err(SendError::transient(format!("the endpoint answered HTTP {status}"), Some(i32::from(status))))
        }
    }
}

/// Whether a request failed because [`PublicOnly`] refused the address.
fn refused_address(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<NotPublic>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_resolver_refuses_names_of_this_machine() {
        use reqwest::dns::Resolve;
        for name in ["localhost", "127.0.0.1", "::1"] {
            let Ok(parsed) = name.parse::<reqwest::dns::Name>() else { panic!("{name}") };
            let refused = PublicOnly.resolve(parsed).await.err().map(|e| e.is::<NotPublic>());
            assert_eq!(refused, Some(true), "{name}");
        }
        assert!(literal_ip_refused("http://127.0.0.1:9/"));
        assert!(literal_ip_refused("http://[::ffff:169.254.169.254]/"));
        assert!(!literal_ip_refused("http://localhost:9/"), "names are the resolver's");
        assert!(!literal_ip_refused("https://93.184.215.14/"));
    }

    #[test]
    fn smtp_urls_name_their_tls() {
        assert_eq!(tls_of("smtps://u:p@mail.example.com:465"), ("mail.example.com".into(), TlsMode::Wrapper));
        assert_eq!(tls_of("smtp://u:p@mail.example.com:587?tls=required"), ("mail.example.com".into(), TlsMode::Required));
        assert_eq!(tls_of("smtp://localhost:2525?tls=opportunistic"), ("localhost".into(), TlsMode::Opportunistic));
        assert_eq!(tls_of("smtp://127.0.0.1:25"), ("127.0.0.1".into(), TlsMode::None));
    }

    #[test]
    fn form_fields_are_encoded() {
        assert_eq!(form_encode(&[("To", "+14155550100"), ("Body", "Order #1001 & co: 5€")]),
                   "To=%2B14155550100&Body=Order+%231001+%26+co%3A+5%E2%82%AC");
    }
}
