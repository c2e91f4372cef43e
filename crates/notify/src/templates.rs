//! The messages: shipped templates per event and channel, staff's edits of
//! them, and rendering with minijinja (HTML parts auto-escaped). A template
//! is rendered against sample data when saved, so one that cannot render is
//! refused then, not discovered when a customer should have heard from us.

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::Channel;

/// A template as shipped, or as staff saved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// One message kind: its key (`order.paid.email`), channel and shipped text.
pub struct Shipped {
    pub key: &'static str,
    pub channel: Channel,
    pub description: &'static str,
    subject: &'static str,
    html: &'static str,
    text: &'static str,
}

impl Shipped {
    pub fn source(&self) -> Source {
        Source { subject: self.subject.into(), html: self.html.into(), text: self.text.into() }
    }
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the {part} does not render: {message}")]
pub struct TemplateError {
    pub part: &'static str,
    pub message: String,
}

/// SMS longer than this are refused by providers (ten segments).
pub const SMS_MAX_CHARS: usize = 1600;

/// The receipt-like emails share their table of lines.
macro_rules! const_format_order_html {
    ($intro:literal) => {
        concat!(
            $intro,
            "\n",
            r#"<table role="presentation" style="width:100%;border-collapse:collapse">
{% for line in order.lines %}<tr><td style="padding:4px 0">{{ line.title }}{% if line.variant_title %} — {{ line.variant_title }}{% endif %} × {{ line.quantity }}</td><td style="text-align:right">{{ line.total }}</td></tr>
{% endfor %}<tr><td style="padding-top:8px">Subtotal</td><td style="text-align:right;padding-top:8px">{{ order.subtotal }}</td></tr>
{% if order.has_discount %}<tr><td>Discount</td><td style="text-align:right">−{{ order.discount }}</td></tr>{% endif %}
<tr><td>Shipping</td><td style="text-align:right">{{ order.shipping }}</td></tr>
<tr><td>Tax</td><td style="text-align:right">{{ order.tax }}</td></tr>
<tr><td><strong>Total</strong></td><td style="text-align:right"><strong>{{ order.total }}</strong></td></tr>
</table>"#,
            "\n{% if order.shipping_address %}<p>Shipping to: {{ order.shipping_address }}</p>{% endif %}\n<p><a href=\"{{ order.url }}\">See your order</a></p>"
        )
    };
}

macro_rules! order_lines_text {
    () => {
        "{% for line in order.lines %}- {{ line.title }}{% if line.variant_title %} — {{ line.variant_title }}{% endif %} × {{ line.quantity }}: {{ line.total }}\n{% endfor %}\nSubtotal: {{ order.subtotal }}\n{% if order.has_discount %}Discount: −{{ order.discount }}\n{% endif %}Shipping: {{ order.shipping }}\nTax: {{ order.tax }}\nTotal: {{ order.total }}\n"
    };
}

/// Every message kind the shop sends, with its shipped wording.
pub static SHIPPED: &[Shipped] = &[
    Shipped {
        key: "user.email_verification_requested.email",
        channel: Channel::Email,
        description: "Confirm an email address (sign-up, or a changed address)",
        subject: "Confirm your email address for {{ shop.name }}",
        html: r#"<p>Hello {{ user.name }},</p>
<p>Please confirm that this is your email address:</p>
<p><a href="{{ url }}">Confirm my email address</a></p>
<p>The link works for {{ expires_in_hours }} hours. If you did not sign up at {{ shop.name }}, ignore this message.</p>"#,
        text: "Hello {{ user.name }},\n\nPlease confirm that this is your email address:\n{{ url }}\n\nThe link works for {{ expires_in_hours }} hours. If you did not sign up at {{ shop.name }}, ignore this message.\n",
    },
    Shipped {
        key: "user.password_reset_requested.email",
        channel: Channel::Email,
        description: "A link to choose a new password",
        subject: "Reset your {{ shop.name }} password",
        html: r#"<p>Hello {{ user.name }},</p>
<p>Someone asked to reset the password of your account. To choose a new one:</p>
<p><a href="{{ url }}">Reset my password</a></p>
<p>The link works for {{ expires_in_hours }} hour(s) and only once. If it was not you, ignore this message: your password stays as it is.</p>"#,
        text: "Hello {{ user.name }},\n\nSomeone asked to reset the password of your account. To choose a new one:\n{{ url }}\n\nThe link works for {{ expires_in_hours }} hour(s) and only once. If it was not you, ignore this message: your password stays as it is.\n",
    },
    Shipped {
        key: "user.email_reuse_attempted.email",
        channel: Channel::Email,
        description: "Someone used the owner's address to sign up, or as another account's new address",
        subject: "Someone tried to use your email address at {{ shop.name }}",
        html: r#"<p>Hello {{ user.name }},</p>
<p>{% if attempt == "email_change" %}Someone tried to move another account at {{ shop.name }} to your email address.{% else %}Someone tried to create an account at {{ shop.name }} with your email address, which already has one.{% endif %} Nothing was changed.</p>
<p>If it was you, <a href="{{ sign_in_url }}">sign in</a> or <a href="{{ reset_url }}">reset your password</a>. If it was not, you can ignore this message.</p>"#,
        text: "Hello {{ user.name }},\n\n{% if attempt == \"email_change\" %}Someone tried to move another account at {{ shop.name }} to your email address.{% else %}Someone tried to create an account at {{ shop.name }} with your email address, which already has one.{% endif %} Nothing was changed.\n\nIf it was you, sign in: {{ sign_in_url }}\nor reset your password: {{ reset_url }}\n\nIf it was not, you can ignore this message.\n",
    },
    Shipped {
        key: "user.email_changed.email",
        channel: Channel::Email,
        description: "To the old address: the account's email was changed",
        subject: "Your {{ shop.name }} email address was changed",
        html: r#"<p>Hello {{ user.name }},</p>
<p>The email address of your account at {{ shop.name }} was changed to <strong>{{ new_email }}</strong>. Messages about your account now go there.</p>
<p>If this was not you, <a href="{{ reset_url }}">reset your password</a> and contact us at once.</p>"#,
        text: "Hello {{ user.name }},\n\nThe email address of your account at {{ shop.name }} was changed to {{ new_email }}. Messages about your account now go there.\n\nIf this was not you, reset your password and contact us at once: {{ reset_url }}\n",
    },
    Shipped {
        key: "order.placed.email",
        channel: Channel::Email,
        description: "Order received (itemised), sent only if the payment is still pending after `order_placed_delay_secs`",
        subject: "We have your order #{{ order.number }}",
        html: const_format_order_html!("<p>Thank you! We have received your order <strong>#{{ order.number }}</strong>. We will write again once the payment is confirmed.</p>"),
        text: concat!("Thank you! We have received your order #{{ order.number }}. We will write again once the payment is confirmed.\n\n", order_lines_text!(), "\nYour order: {{ order.url }}\n"),
    },
    Shipped {
        key: "order.placed.sms",
        channel: Channel::Sms,
        description: "Order received, by SMS",
        subject: "",
        html: "",
        text: "{{ shop.name }}: we have your order #{{ order.number }} ({{ order.total }}). {{ order.url }}",
    },
    Shipped {
        key: "order.paid.email",
        channel: Channel::Email,
        description: "The receipt: the order is paid (itemised)",
        subject: "Receipt for order #{{ order.number }}",
        html: const_format_order_html!("<p>Thank you! Your payment for order <strong>#{{ order.number }}</strong> is confirmed. This is your receipt.</p>"),
        text: concat!("Thank you! Your payment for order #{{ order.number }} is confirmed. This is your receipt.\n\n", order_lines_text!(), "\nYour order: {{ order.url }}\n"),
    },
    Shipped {
        key: "order.paid.sms",
        channel: Channel::Sms,
        description: "Payment confirmed, by SMS",
        subject: "",
        html: "",
        text: "{{ shop.name }}: payment confirmed for order #{{ order.number }} ({{ order.total }}). Thank you!",
    },
    Shipped {
        key: "order.fulfilled.email",
        channel: Channel::Email,
        description: "A parcel is on its way (carrier and tracking)",
        subject: "{% if fulfilment.complete %}Your order #{{ order.number }} is on its way{% else %}Part of your order #{{ order.number }} is on its way{% endif %}",
        html: r#"<p>Good news: {% if fulfilment.complete %}your order <strong>#{{ order.number }}</strong> has shipped{% else %}a parcel of your order <strong>#{{ order.number }}</strong> has shipped; the rest follows{% endif %}.</p>
{% if fulfilment.carrier %}<p>Carrier: {{ fulfilment.carrier }}{% if fulfilment.tracking_number %}, tracking number {{ fulfilment.tracking_number }}{% endif %}</p>{% endif %}
{% if fulfilment.tracking_url %}<p><a href="{{ fulfilment.tracking_url }}">Track the parcel</a></p>{% endif %}
<p><a href="{{ order.url }}">See your order</a></p>"#,
        text: "Good news: {% if fulfilment.complete %}your order #{{ order.number }} has shipped{% else %}a parcel of your order #{{ order.number }} has shipped; the rest follows{% endif %}.\n{% if fulfilment.carrier %}\nCarrier: {{ fulfilment.carrier }}{% if fulfilment.tracking_number %}, tracking number {{ fulfilment.tracking_number }}{% endif %}\n{% endif %}{% if fulfilment.tracking_url %}Track the parcel: {{ fulfilment.tracking_url }}\n{% endif %}\nYour order: {{ order.url }}\n",
    },
    Shipped {
        key: "order.fulfilled.sms",
        channel: Channel::Sms,
        description: "A parcel is on its way, by SMS",
        subject: "",
        html: "",
        text: "{{ shop.name }}: order #{{ order.number }} has shipped{% if fulfilment.carrier %} with {{ fulfilment.carrier }}{% endif %}.{% if fulfilment.tracking_url %} Track: {{ fulfilment.tracking_url }}{% elif fulfilment.tracking_number %} Tracking number: {{ fulfilment.tracking_number }}{% endif %}",
    },
    Shipped {
        key: "order.cancelled.email",
        channel: Channel::Email,
        description: "The order is cancelled",
        subject: "Order #{{ order.number }} is cancelled",
        html: r#"<p>Your order <strong>#{{ order.number }}</strong> is cancelled{% if cancellation.reason %} ({{ cancellation.reason }}){% endif %}.</p>
{% if cancellation.refunded %}<p>{{ cancellation.refunded }} will be back on your card within a few days.</p>{% else %}<p>You have not been charged.</p>{% endif %}
<p><a href="{{ order.url }}">See your order</a></p>"#,
        text: "Your order #{{ order.number }} is cancelled{% if cancellation.reason %} ({{ cancellation.reason }}){% endif %}.\n\n{% if cancellation.refunded %}{{ cancellation.refunded }} will be back on your card within a few days.{% else %}You have not been charged.{% endif %}\n\nYour order: {{ order.url }}\n",
    },
    Shipped {
        key: "order.refunded.email",
        channel: Channel::Email,
        description: "Money is on its way back",
        subject: "A refund of {{ refund.amount }} for order #{{ order.number }}",
        html: r#"<p>We have refunded <strong>{{ refund.amount }}</strong> for your order <strong>#{{ order.number }}</strong>{% if refund.reason %} ({{ refund.reason }}){% endif %}. It will be back on your card within a few days.</p>
<p>Refunded so far: {{ refund.total_refunded }}.</p>
<p><a href="{{ order.url }}">See your order</a></p>"#,
        text: "We have refunded {{ refund.amount }} for your order #{{ order.number }}{% if refund.reason %} ({{ refund.reason }}){% endif %}. It will be back on your card within a few days.\n\nRefunded so far: {{ refund.total_refunded }}.\n\nYour order: {{ order.url }}\n",
    },
    Shipped {
        key: "inventory.low_stock.email",
        channel: Channel::Email,
        description: "Staff: the day's digest of variants running low",
        subject: "{{ items|length }} variant{% if items|length != 1 %}s{% endif %} running low at {{ shop.name }}",
        html: r#"<p>Hello {{ staff.name }},</p>
<p>These variants are at or below their low-stock threshold:</p>
<table role="presentation" style="border-collapse:collapse">
<tr><th style="text-align:left;padding-right:16px">SKU</th><th style="text-align:left;padding-right:16px">Product</th><th style="text-align:right">Available</th></tr>
{% for item in items %}<tr><td style="padding-right:16px">{{ item.sku }}</td><td style="padding-right:16px">{{ item.title }}</td><td style="text-align:right">{{ item.available }}</td></tr>
{% endfor %}</table>"#,
        text: "Hello {{ staff.name }},\n\nThese variants are at or below their low-stock threshold:\n\n{% for item in items %}- {{ item.sku }} ({{ item.title }}): {{ item.available }} available\n{% endfor %}",
    },
    Shipped {
        key: "inventory.back_in_stock.email",
        channel: Channel::Email,
        description: "A product a shopper asked about is back",
        subject: "{{ product.title }} is back in stock",
        html: r#"<p>Good news: <strong>{{ product.title }}</strong> is back in stock at {{ shop.name }}.</p>
<p><a href="{{ product.url }}">Have a look</a> — it may not last.</p>
<p style="font-size:small">You asked us to tell you once; we will not write about it again.</p>"#,
        text: "Good news: {{ product.title }} is back in stock at {{ shop.name }}.\n\nHave a look: {{ product.url }}\n\nYou asked us to tell you once; we will not write about it again.\n",
    },
    Shipped {
        key: "webhook.disabled.email",
        channel: Channel::Email,
        description: "Staff: a webhook endpoint kept failing and was switched off",
        subject: "A webhook endpoint of {{ shop.name }} was switched off",
        html: r#"<p>Hello {{ staff.name }},</p>
<p>Deliveries to <strong>{{ endpoint.url }}</strong> ({{ endpoint.id }}) failed for {{ endpoint.failing_for }}, so the endpoint is switched off: {{ endpoint.reason }}.</p>
<p>Fix the receiving side, then switch the endpoint on again in the console and retry the failed deliveries.</p>"#,
        text: "Hello {{ staff.name }},\n\nDeliveries to {{ endpoint.url }} ({{ endpoint.id }}) failed for {{ endpoint.failing_for }}, so the endpoint is switched off: {{ endpoint.reason }}.\n\nFix the receiving side, then switch the endpoint on again in the console and retry the failed deliveries.\n",
    },
];


pub fn shipped(key: &str) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|s| s.key == key)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `{% if x %}` on a missing value is false; printing one is an error.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    // A loop in a staff-written template cannot hold a sender for long.
    env.set_fuel(Some(100_000));
    env
}

/// Renders a template for `channel` with `context`. HTML parts are
/// auto-escaped (the `.html` name), subject and text are not, and the
/// subject is one line.
pub fn render(source: &Source, channel: Channel, context: &Value) -> Result<Rendered, TemplateError> {
    let env = environment();
    let ctx = minijinja::Value::from(Serde(context));
    let part = |part: &'static str, name: &str, text: &str| {
        env.render_named_str(name, text, ctx.clone())
            .map_err(|e| TemplateError { part, message: describe(&e) })
    };
    let text = part("text", "body.txt", &source.text)?;
    if text.trim().is_empty() {
        return Err(TemplateError { part: "text", message: "the message would be empty".into() });
    }
    match channel {
        Channel::Sms => {
            if text.chars().count() > SMS_MAX_CHARS {
                return Err(TemplateError { part: "text", message: format!("longer than {SMS_MAX_CHARS} characters") });
            }
            Ok(Rendered { subject: String::new(), text: text.trim().to_owned(), html: None })
        }
        Channel::Email | Channel::Webhook => {
            let subject = part("subject", "subject.txt", &source.subject)?;
            let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
            if subject.is_empty() {
                return Err(TemplateError { part: "subject", message: "the subject would be empty".into() });
            }
            let html = if source.html.trim().is_empty() { None } else { Some(part("html", "body.html", &source.html)?) };
            Ok(Rendered { subject, text, html })
        }
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        message = format!("{message} (line {line})");
    }
    message
}

/// Wraps a rendered HTML body in the shop's layout, with the unsubscribe
/// footer when there is one. Values are escaped here too.
pub fn layout(shop_name: &str, body: &str, unsubscribe_url: Option<&str>) -> String {
    let footer = unsubscribe_url
        .map(|u| format!(r#"<p style="font-size:small;color:#555"><a href="{}">Unsubscribe</a></p>"#, escape(u)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{name}</title></head><body style="font-family:system-ui,sans-serif;line-height:1.5;color:#111;max-width:600px;margin:0 auto;padding:16px"><h1 style="font-size:20px">{name}</h1>{body}{footer}</body></html>"#,
        name = escape(shop_name)
    )
}

/// Appends the unsubscribe line to a plain-text body.
pub fn text_footer(text: &str, unsubscribe_url: Option<&str>) -> String {
    match unsubscribe_url {
        Some(u) => format!("{}\n\n--\nUnsubscribe: {u}\n", text.trim_end()),
        None => text.to_owned(),
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Data shaped like the real thing, for previews and for checking a template when it is saved.
pub fn sample_context(key: &str, shop_name: &str, shop_url: &str) -> Value {
    let order = json!({
        "id": "ord_sample", "number": 1042, "url": format!("{shop_url}/orders/ord_sample"),
        "email": "ada@example.com",
        "lines": [
            {"title": "Classic Tee", "variant_title": "M / Navy", "sku": "TEE-M-NAVY", "quantity": 2, "unit_price": "19.00 USD", "total": "38.00 USD"},
            {"title": "Canvas Tote", "variant_title": "", "sku": "TOTE-1", "quantity": 1, "unit_price": "24.00 USD", "total": "24.00 USD"}
        ],
        "subtotal": "62.00 USD", "discount": "6.20 USD", "has_discount": true, "shipping": "5.00 USD",
        "tax": "4.88 USD", "total": "65.68 USD",
        "shipping_address": "Ada Lovelace, 12 St James's Square, London SW1Y 4JH, GB"
    });
    let mut ctx = json!({
        "shop": {"name": shop_name, "url": shop_url},
        "user": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "staff": {"name": "Grace Hopper", "email": "grace@example.com"},
        "url": format!("{shop_url}/account/verify-email?token=sample"),
        "expires_in_hours": 24,
        "attempt": "register",
        "new_email": "ada.lovelace@example.org",
        "sign_in_url": format!("{shop_url}/account/sign-in"),
        "reset_url": format!("{shop_url}/account/forgot-password"),
        "order": order,
        "fulfilment": {"carrier": "UPS", "tracking_number": "1Z999AA10123456784",
                       "tracking_url": "https://www.ups.com/track?tracknum=1Z999AA10123456784", "complete": true},
        "cancellation": {"reason": "requested by the customer", "refunded": "65.68 USD"},
        "refund": {"amount": "19.00 USD", "reason": "damaged in transit", "total_refunded": "19.00 USD"},
        "items": [{"sku": "TEE-M-NAVY", "title": "Classic Tee — M / Navy", "available": 3},
                  {"sku": "TOTE-1", "title": "Canvas Tote", "available": 0}],
        "product": {"title": "Classic Tee", "url": format!("{shop_url}/products/classic-tee")},
        "endpoint": {"id": "whk_sample", "url": "https://hooks.example.com/emporium", "reason": "HTTP 500 from the endpoint",
                     "failing_for": "24 hours"},
    });
    if key.starts_with("user.password_reset") {
        ctx["url"] = json!(format!("{shop_url}/account/reset-password?token=sample"));
        ctx["expires_in_hours"] = json!(1);
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_renders_its_sample() {
        for t in SHIPPED {
            let ctx = sample_context(t.key, "Emporium", "http://shop.test");
            let out = render(&t.source(), t.channel, &ctx).unwrap_or_else(|e| panic!("{}: {e}", t.key));
            assert!(!out.text.trim().is_empty(), "{}", t.key);
            if t.channel == Channel::Email {
                assert!(!out.subject.is_empty() && out.html.is_some(), "{}", t.key);
            }
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let source = Source { subject: "Hi {{ user.name }}".into(), html: "<p>{{ user.name }}</p>".into(), text: "{{ user.name }}".into() };
        let out = render(&source, Channel::Email, &json!({"user": {"name": "<script>alert(1)</script> & co"}}));
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.html.as_deref(), Some("<p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; co</p>"));
        assert_eq!(out.text, "<script>alert(1)</script> & co");
    }

    #[test]
    fn broken_templates_are_refused_with_the_part_named() {
        let ctx = sample_context("order.paid.email", "Emporium", "http://shop.test");
        let bad_syntax = Source { subject: "ok".into(), html: "{% for x in %}".into(), text: "ok".into() };
        assert_eq!(render(&bad_syntax, Channel::Email, &ctx).map_err(|e| e.part), Err("html"));
        let unknown = Source { subject: "{{ order.nummber }}".into(), html: String::new(), text: "ok".into() };
        assert_eq!(render(&unknown, Channel::Email, &ctx).map_err(|e| e.part), Err("subject"));
        let endless = Source { subject: "x".into(), html: String::new(), text: "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}".into() };
        assert_eq!(render(&endless, Channel::Email, &ctx).map_err(|e| e.part), Err("text"));
        let long_sms = Source { subject: String::new(), html: String::new(), text: "{% for i in range(2000) %}x{% endfor %}".into() };
        assert!(render(&long_sms, Channel::Sms, &ctx).is_err());
    }
}
