//! The admin console (`/admin`): staff sign in like anyone else; each page
//! and link is shown only to staff whose role grants its permission, and
//! every action is the staff API's, which checks the permission again.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use kernel::auth::{Permission, Role, permissions_of};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::account::{ACCESS, AddressFields};
use crate::api::{ApiError, encode};
use crate::pages::{DoneQuery, PageError, item_name, money, render};
use crate::session;

/// The signed-in staff member: their name, token and permissions.
pub(crate) struct Staff {
    pub(crate) name: String,
    token: String,
    permissions: Vec<Permission>,
}

impl Staff {
    pub(crate) fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {}", self.token))]
    }

    /// The console's sections this person may open: (path, label).
    pub(crate) fn nav(&self) -> Vec<(&'static str, &'static str)> {
        let mut nav = vec![("/admin", "Dashboard")];
        if self.may(Permission::OrdersRead) {
            nav.push(("/admin/orders", "Orders"));
        }
        for s in crate::sections::SECTIONS.iter() {
            if self.may(s.read) {
                nav.push((s.path, s.title));
            }
        }
        nav
    }
}

pub(crate) enum Gate {
    In(Staff),
    Out(Response),
}

pub(crate) async fn staff(site: &Site, headers: &HeaderMap) -> Result<Gate, PageError> {
    let Some(token) = session::cookie(headers, ACCESS) else {
        return Ok(Gate::Out(Redirect::to("/account/sign-in").into_response()));
    };
    let (status, me) = site.api.send_as(Method::GET, "/api/v1/me", &[("authorization", format!("Bearer {token}"))], None).await?;
    if !status.is_success() {
        return Ok(Gate::Out(Redirect::to("/account/sign-in").into_response()));
    }
    let roles: Vec<Role> = serde_json::from_value(me["roles"].clone()).unwrap_or_default();
    if !roles.iter().any(|r| r.is_staff()) {
        return Err(PageError(StatusCode::FORBIDDEN, "The console is for the shop's staff.".into()));
    }
    Ok(Gate::In(Staff { name: me["name"].as_str().unwrap_or_default().to_owned(), token, permissions: permissions_of(&roles) }))
}

pub(crate) fn forbidden() -> PageError {
    PageError(StatusCode::FORBIDDEN, "Your role does not give access to this page.".into())
}

impl Site {
    pub(crate) async fn staff_get(&self, staff: &Staff, path: &str) -> Result<Value, ApiError> {
        let (status, body) = self.api.send_as(Method::GET, path, &staff.headers(), None).await?;
        if !status.is_success() {
            return Err(ApiError::Status { status, body });
        }
        Ok(body)
    }
}

pub(crate) fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

// Dashboard

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct Dashboard<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    sees_orders: bool,
    orders_today: usize,
    revenue_today: String,
    to_fulfil: usize,
    sees_notifications: bool,
    failed_notifications: usize,
    chart: String,
    sees_stock: bool,
    low_stock: Vec<LowStock>,
}

/// A variant at or under its low-stock threshold.
struct LowStock {
    sku: String,
    /// Its page in the console.
    link: String,
    name: String,
    available: i64,
}

/// Tracked variants of active products whose available stock is at or under
/// their threshold, fewest first.
async fn low_stock(site: &Site, staff: &Staff) -> Result<Vec<LowStock>, ApiError> {
    let mut low = Vec::new();
    for data in pages_of(site, staff, "/api/v1/admin/products?status=active&low_stock=true&limit=100", 50).await? {
        for product in data.as_array().into_iter().flatten() {
            for v in product["variants"].as_array().into_iter().flatten() {
                let (Some(available), Some(threshold)) = (v["available"].as_i64(), v["low_stock_threshold"].as_i64()) else {
                    continue; // untracked stock is never low
                };
                if available <= threshold {
                    let name = item_name(product["title"].as_str().unwrap_or_default(), v["title"].as_str().unwrap_or_default());
                    let sku = v["sku"].as_str().unwrap_or_default().to_owned();
                    low.push(LowStock { link: format!("/admin/inventory/{}", encode(&sku)), sku, name, available });
                }
            }
        }
    }
    low.sort_by(|a, b| a.available.cmp(&b.available).then_with(|| a.sku.cmp(&b.sku)));
    Ok(low)
}

fn day_of(rfc3339: &str) -> String {
    rfc3339.chars().take(10).collect()
}

/// Days before today, as `YYYY-MM-DD`, oldest first (today last).
fn last_days(n: i64) -> Vec<String> {
    let today = time::OffsetDateTime::now_utc().date();
    (0..n).rev().filter_map(|d| today.checked_sub(time::Duration::days(d))).map(|d| d.to_string()).collect()
}

/// Bars of revenue per day, drawn as SVG (no script, no image request).
fn sales_chart(days: &[(String, i64)], currency: &str) -> String {
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let (w, h, bar) = (600, 160, 600 / days.len().max(1));
    let mut svg = format!(r#"<svg viewBox="0 0 {w} {}" width="100%" role="img" aria-label="Revenue per day, last {} days" xmlns="http://www.w3.org/2000/svg">"#, h + 20, days.len());
    for (i, (day, amount)) in days.iter().enumerate() {
        let bh = (amount * h as i64 / max) as usize;
        let x = i * bar;
        svg += &format!(
            r##"<rect x="{x}" y="{}" width="{}" height="{bh}" fill="#0b5cad"><title>{}: {}</title></rect>"##,
            h - bh,
            bar.saturating_sub(2).max(1),
            crate::xml_escape(day),
            crate::xml_escape(&money(*amount, currency))
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        svg += &format!(r##"<text x="0" y="{}" font-size="12" fill="#555">{}</text><text x="{w}" y="{}" font-size="12" fill="#555" text-anchor="end">{}</text>"##,
            h + 16, crate::xml_escape(&first.0), h + 16, crate::xml_escape(&last.0));
    }
    svg + "</svg>"
}

#[derive(Debug, Deserialize)]
struct Amount {
    amount: i64,
}

#[derive(Debug, Deserialize)]
struct Summary {
    id: String,
    number: i64,
    status: String,
    total: Amount,
    email: Option<String>,
    placed_at: String,
}

/// Staff's orders placed since `from` (RFC 3339), newest first, up to 1,000.
/// The `data` of each page of a staff list, following the cursor for at
/// most `pages` pages; `path` has its query (with `limit`) already.
async fn pages_of(site: &Site, staff: &Staff, path: &str, pages: usize) -> Result<Vec<Value>, ApiError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    while all.len() < pages {
        let mut path = path.to_owned();
        if let Some(a) = &after {
            path += &format!("&starting_after={}", encode(a));
        }
        let mut page = site.staff_get(staff, &path).await?;
        let next = match (page["has_more"].as_bool(), page["next_cursor"].as_str()) {
            (Some(true), Some(c)) => Some(c.to_owned()),
            _ => None,
        };
        all.push(page["data"].take());
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    Ok(all)
}

/// Orders placed since `from` (at most 1,000).
async fn orders_since(site: &Site, staff: &Staff, from: &str) -> Result<Vec<Summary>, ApiError> {
    let pages = pages_of(site, staff, &format!("/api/v1/admin/orders?limit=100&from={}", encode(from)), 10).await?;
    Ok(pages.into_iter().flat_map(|data| serde_json::from_value::<Vec<Summary>>(data).unwrap_or_default()).collect())
}

const COUNTED: [&str; 6] = ["paid", "partially_fulfilled", "fulfilled", "delivered", "partially_refunded", "refunded"];

pub async fn dashboard(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    let days = last_days(30);
    let (mut orders_today, mut revenue_today, mut to_fulfil, mut chart) = (0, 0, 0, String::new());
    if staff.may(Permission::OrdersRead) {
        let from = format!("{}T00:00:00Z", days.first().cloned().unwrap_or_default());
        let orders = orders_since(&site, &staff, &from).await?;
        let today = days.last().cloned().unwrap_or_default();
        let sold: Vec<&Summary> = orders.iter().filter(|o| COUNTED.contains(&o.status.as_str())).collect();
        orders_today = sold.iter().filter(|o| day_of(&o.placed_at) == today).count();
        revenue_today = sold.iter().filter(|o| day_of(&o.placed_at) == today).map(|o| o.total.amount).sum();
        let per_day: Vec<(String, i64)> = days
            .iter()
            .map(|d| (d.clone(), sold.iter().filter(|o| day_of(&o.placed_at) == *d).map(|o| o.total.amount).sum()))
            .collect();
        chart = sales_chart(&per_day, &site.currency);
        let waiting = site.staff_get(&staff, "/api/v1/admin/orders?status=paid&limit=100").await?;
        to_fulfil = waiting["data"].as_array().map_or(0, Vec::len);
    }
    let mut failed_notifications = 0;
    let sees_notifications = staff.may(Permission::CustomersRead);
    if sees_notifications {
        for status in ["failed", "dead"] {
            // Notifications may run elsewhere; a console without them shows none.
            if let Ok(page) = site.staff_get(&staff, &format!("/api/v1/admin/notifications?status={status}&limit=100")).await {
                failed_notifications += page["data"].as_array().map_or(0, Vec::len);
            }
        }
    }
    let sees_stock = staff.may(Permission::InventoryWrite);
    let low_stock = if sees_stock { low_stock(&site, &staff).await? } else { Vec::new() };
    let page = Dashboard {
        sees_stock,
        low_stock,
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav(),
        sees_orders: staff.may(Permission::OrdersRead),
        orders_today,
        revenue_today: money(revenue_today, &site.currency),
        to_fulfil,
        sees_notifications,
        failed_notifications,
        chart,
    };
    Ok(no_store(render(&page)))
}

// Orders

#[derive(Deserialize, Default)]
pub struct OrdersQuery {
    #[serde(default)]
    status: String,
    /// The customer's email.
    #[serde(default)]
    email: String,
    /// Placed on or after this day (`YYYY-MM-DD`).
    #[serde(default)]
    from: String,
    /// Placed on or before this day.
    #[serde(default)]
    to: String,
    after: Option<String>,
}

/// Midnight (UTC) at the start of `day`, `days` later, as RFC 3339.
fn midnight(day: &str, days: i64) -> Result<String, PageError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day.trim(), &format).map_err(|_| PageError(StatusCode::UNPROCESSABLE_ENTITY, format!("“{day}” is not a day (YYYY-MM-DD).")))?;
    let date = date.checked_add(time::Duration::days(days)).unwrap_or(date);
    Ok(format!("{}T00:00:00Z", date.format(&format).unwrap_or_default()))
}

impl OrdersQuery {
    /// The filters as a query string (without the cursor).
    fn query(&self) -> String {
        format!("status={}&email={}&from={}&to={}", encode(&self.status), encode(&self.email), encode(&self.from), encode(&self.to))
    }

    /// The filters as the orders API takes them.
    fn api_filters(&self) -> Result<String, PageError> {
        let mut path = String::new();
        if !self.status.is_empty() {
            path += &format!("&status={}", encode(&self.status));
        }
        if !self.email.trim().is_empty() {
            path += &format!("&email={}", encode(self.email.trim()));
        }
        if !self.from.trim().is_empty() {
            path += &format!("&from={}", encode(&midnight(&self.from, 0)?));
        }
        if !self.to.trim().is_empty() {
            path += &format!("&to={}", encode(&midnight(&self.to, 1)?));
        }
        Ok(path)
    }
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
struct OrdersPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    filters: OrdersQuery,
    orders: Vec<(String, i64, String, String, String, String)>,
    next: Option<String>,
}

pub async fn orders(State(site): State<Site>, headers: HeaderMap, Query(q): Query<OrdersQuery>) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::OrdersRead) {
        return Err(forbidden());
    }
    let mut path = format!("/api/v1/admin/orders?limit=50{}", q.api_filters()?);
    if let Some(a) = &q.after {
        path += &format!("&starting_after={}", encode(a));
    }
    let page = site.staff_get(&staff, &path).await?;
    let list: Vec<Summary> = serde_json::from_value(page["data"].clone()).unwrap_or_default();
    let next = page["next_cursor"].as_str().map(|c| format!("/admin/orders?{}&after={}", q.query(), encode(c)));
    let orders = list
        .into_iter()
        .map(|o| (format!("/admin/orders/{}", encode(&o.id)), o.number, o.status.replace('_', " "), o.email.unwrap_or_default(), money(o.total.amount, &site.currency), day_of(&o.placed_at)))
        .collect();
    Ok(no_store(render(&OrdersPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav(), filters: q, orders, next })))
}

#[derive(Debug, Deserialize)]
struct Line {
    title: String,
    variant_title: String,
    sku: String,
    quantity: i64,
    fulfilled: i64,
}

#[derive(Debug, Deserialize)]
struct Parcel {
    carrier: Option<String>,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Entry {
    at: String,
    kind: String,
    actor: Option<String>,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
struct Order {
    id: String,
    number: i64,
    status: String,
    email: Option<String>,
    lines: Vec<Line>,
    #[serde(default)]
    fulfilments: Vec<Parcel>,
    #[serde(default)]
    timeline: Vec<Entry>,
}

#[derive(Template)]
#[template(path = "admin/order.html")]
struct OrderPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    csrf: String,
    id: String,
    number: i64,
    status: String,
    email: String,
    lines: Vec<(String, String, i64, i64)>,
    /// Where it goes, on one line.
    ship_to: String,
    /// Totals, then what was taken and given back.
    sums: Vec<(&'static str, String)>,
    payments: Vec<String>,
    refunds: Vec<String>,
    returns: Vec<String>,
    parcels: Vec<(String, String, String, String)>,
    timeline: Vec<(String, String, String)>,
    can_fulfil: bool,
    forms: Vec<crate::console::FormView>,
    message: String,
    done: String,
    answer: Vec<crate::console::Detail>,
}

async fn order_page(site: &Site, headers: &HeaderMap, staff: &Staff, id: &str, status: StatusCode, message: String) -> Result<Response, PageError> {
    let record = site.staff_get(staff, &format!("/api/v1/admin/orders/{}", encode(id))).await?;
    let target = format!("/admin/orders/{}/act", encode(id));
    let mut forms = crate::console::forms(site, staff, crate::sections::ORDER_ACTIONS, &target, &record);
    let open = matches!(record["status"].as_str(), Some("pending_payment" | "payment_failed" | "paid"));
    let shipped = record["fulfilments"].as_array().is_some_and(|f| !f.is_empty());
    forms.retain(|f| match f.key {
        "cancel" => open,
        "delivered" => shipped && record["status"] != "delivered",
        "refund" => record["captured"]["amount"].as_i64().unwrap_or(0) > record["refunded"]["amount"].as_i64().unwrap_or(0),
        _ => true,
    });
    let cash = |v: &Value| money(v["amount"].as_i64().unwrap_or(0), v["currency"].as_str().unwrap_or(&site.currency));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    // Staff see the phone too, for the carrier.
    let ship_to = match serde_json::from_value::<Option<AddressFields>>(record["shipping_address"].clone()).ok().flatten() {
        Some(a) if a.phone().is_empty() => a.line(),
        Some(a) => format!("{}, {}", a.line(), a.phone()),
        None => String::new(),
    };
    let totals = &record["totals"];
    let mut sums = vec![("Subtotal", cash(&totals["subtotal"]))];
    if totals["discount"]["amount"].as_i64().unwrap_or(0) != 0 {
        sums.push(("Discount", format!("−{}", cash(&totals["discount"]))));
    }
    sums.extend([("Shipping", cash(&totals["shipping"])), ("Tax", cash(&totals["tax"])), ("Total", cash(&totals["total"])), ("Taken", cash(&record["captured"])), ("Refunded", cash(&record["refunded"]))]);
    let list = |key: &str| record[key].as_array().cloned().unwrap_or_default();
    let payments = list("payments")
        .iter()
        .map(|p| {
            let mut line = format!("{} · {} · {}", text(&p["provider"]), text(&p["status"]).replace('_', " "), cash(&p["amount"]));
            if let Some(why) = p["failure_message"].as_str() {
                line += &format!(" — {why}");
            }
            line
        })
        .collect();
    let refunds = list("refunds").iter().map(|r| format!("{}: {} — {}", day_of(r["created_at"].as_str().unwrap_or_default()), cash(&r["amount"]), text(&r["reason"]))).collect();
    let returns = list("returns")
        .iter()
        .map(|r| {
            let items: Vec<String> = r["items"].as_array().into_iter().flatten().map(|i| format!("{} × {}", text(&i["sku"]), i["quantity"])).collect();
            format!("{} — “{}” — {}", items.join(", "), text(&r["reason"]), text(&r["status"]))
        })
        .collect();
    let o: Order = serde_json::from_value(record)
        .map_err(|e| PageError::from(ApiError::Shape { path: "/api/v1/admin/orders/{id}".into(), reason: e.to_string() }))?;
    let (csrf, set) = session::csrf(headers, site.secure());
    let left: i64 = o.lines.iter().map(|l| l.quantity - l.fulfilled).sum();
    let page = OrderPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav(),
        csrf,
        id: o.id,
        number: o.number,
        status: o.status.replace('_', " "),
        email: o.email.unwrap_or_default(),
        lines: o.lines.iter().map(|l| (item_name(&l.title, &l.variant_title), l.sku.clone(), l.quantity, l.fulfilled)).collect(),
        ship_to,
        sums,
        payments,
        refunds,
        returns,
        parcels: o.fulfilments.iter().map(|f| (f.carrier.clone().unwrap_or_default(), f.tracking_number.clone().unwrap_or_default(), f.tracking_url.clone().unwrap_or_default(), day_of(&f.created_at))).collect(),
        timeline: o
            .timeline
            .iter()
            .map(|e| {
                let what = match e.data.get("text").or_else(|| e.data.get("reason")).and_then(Value::as_str) {
                    Some(text) => format!("{}: {text}", e.kind.replace('_', " ")),
                    None => e.kind.replace('_', " "),
                };
                (e.at.replace('T', " ").chars().take(16).collect(), what, e.actor.clone().unwrap_or_default())
            })
            .collect(),
        can_fulfil: staff.may(Permission::OrdersWrite) && left > 0 && matches!(o.status.as_str(), "paid" | "partially_fulfilled"),
        forms,
        message,
        done: String::new(),
        answer: Vec::new(),
    };
    let mut response = no_store((status, render(&page)).into_response());
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

pub async fn order(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::OrdersRead) {
        return Err(forbidden());
    }
    order_page(&site, &headers, &staff, &id, StatusCode::OK, String::new()).await
}

#[derive(Deserialize)]
pub struct FulfilForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    tracking_number: String,
    #[serde(default)]
    tracking_url: String,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Ships everything left, with the carrier and tracking given.
pub async fn fulfil(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Form(f): Form<FulfilForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    let body = json!({"carrier": some(&f.carrier), "tracking_number": some(&f.tracking_number), "tracking_url": some(&f.tracking_url)});
    let path = format!("/api/v1/admin/orders/{}/fulfilments", encode(&id));
    let (status, answer) = site.api.send_as(Method::POST, &path, &staff.headers(), Some(body)).await?;
    if status.is_success() {
        return Ok(Redirect::to(&format!("/admin/orders/{}", encode(&id))).into_response());
    }
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    let message = answer["error"]["message"].as_str().unwrap_or("That did not work.").to_owned();
    order_page(&site, &headers, &staff, &id, StatusCode::UNPROCESSABLE_ENTITY, message).await
}

/// Sends one of the order page's forms (a note, a refund, a cancellation, delivered).
pub async fn order_action(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Form(posted): Form<Vec<(String, String)>>) -> Result<Response, PageError> {
    let csrf = posted.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default();
    if !session::csrf_ok(&headers, csrf) {
        return Err(PageError::expired_form());
    }
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    match crate::console::send(&site, &staff, crate::sections::ORDER_ACTIONS, &id, &posted).await? {
        Ok(()) => Ok(Redirect::to(&format!("/admin/orders/{}", encode(&id))).into_response()),
        Err((status, message)) => order_page(&site, &headers, &staff, &id, status, message).await,
    }
}

// Products

/// Variant rows on the new-product form.
const VARIANT_ROWS: usize = 3;

#[derive(Template)]
#[template(path = "admin/new_product.html")]
struct NewProductPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    csrf: String,
    currency: String,
    rows: Vec<usize>,
    message: String,
}

fn new_product_page(site: &Site, staff: &Staff, csrf: String, status: StatusCode, message: String) -> Response {
    let page = NewProductPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav(), csrf, currency: site.currency.clone(), rows: (1..=VARIANT_ROWS).collect(), message };
    no_store((status, render(&page)).into_response())
}

pub async fn new_product(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::CatalogWrite) {
        return Err(forbidden());
    }
    let (csrf, set) = session::csrf(&headers, site.secure());
    let mut response = new_product_page(&site, &staff, csrf, StatusCode::OK, String::new());
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// A picture as it came in the form.
struct Picture {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// `multipart/form-data` with one `file` part and an `alt` part, for the media API.
fn picture_form(p: &Picture, alt: &str) -> (String, Vec<u8>) {
    let boundary = format!("emporium-{}", session::random_token());
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"alt\"\r\n\r\n{alt}\r\n").as_bytes());
    let name = p.name.replace(['"', '\r', '\n'], "");
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {}\r\n\r\n", p.content_type).as_bytes(),
    );
    body.extend_from_slice(&p.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Creates a product with its variants (one option), their stock and a picture.
pub async fn create_product(State(site): State<Site>, headers: HeaderMap, mut form: axum::extract::Multipart) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    let mut fields = std::collections::HashMap::new();
    let mut picture: Option<Picture> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Ok(new_product_page(&site, &staff, String::new(), StatusCode::UNPROCESSABLE_ENTITY, e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            let file = field.file_name().unwrap_or("picture").to_owned();
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(|e| PageError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
            if !bytes.is_empty() {
                picture = Some(Picture { name: file, content_type, bytes: bytes.to_vec() });
            }
        } else {
            let text = field.text().await.map_err(|e| PageError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
            fields.insert(name, text);
        }
    }
    let get = |k: &str| fields.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    if !session::csrf_ok(&headers, &get("csrf")) {
        return Err(PageError::expired_form());
    }
    let option = get("option");
    let mut values = Vec::new();
    let mut variants = Vec::new();
    let mut stock = Vec::new();
    for row in 1..=VARIANT_ROWS {
        let sku = get(&format!("sku{row}"));
        if sku.is_empty() {
            continue;
        }
        let value = get(&format!("value{row}"));
        let price = match kernel::money::Currency::parse(&site.currency).map(|c| c.parse_decimal(&get(&format!("price{row}")))) {
            Ok(Ok(p)) => p,
            _ => return Ok(new_product_page(&site, &staff, get("csrf"), StatusCode::UNPROCESSABLE_ENTITY, format!("The price of {sku} is not an amount (e.g. 19.99)."))),
        };
        let option_values = if option.is_empty() { Vec::new() } else { vec![value.clone()] };
        values.push(value);
        variants.push(json!({"sku": sku, "prices": {site.currency.as_str(): price}, "option_values": option_values}));
        stock.push((sku, get(&format!("stock{row}")).parse::<i64>().unwrap_or(0)));
    }
    let mut body = json!({"title": get("title"), "description": get("description"), "status": get("status"), "variants": variants});
    if !get("brand").is_empty() {
        body["brand"] = json!(get("brand"));
    }
    if !option.is_empty() {
        body["options"] = json!([{"name": option, "values": values}]);
    }
    let (status, product) = site.api.send_as(Method::POST, "/api/v1/admin/products", &staff.headers(), Some(body)).await?;
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    if !status.is_success() {
        let message = product["error"]["message"].as_str().unwrap_or("The product could not be made.").to_owned();
        return Ok(new_product_page(&site, &staff, get("csrf"), StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    let id = product["id"].as_str().unwrap_or_default().to_owned();
    for (sku, on_hand) in stock {
        let path = format!("/api/v1/admin/inventory/{}", encode(&sku));
        let (status, answer) = site.api.send_as(Method::PUT, &path, &staff.headers(), Some(json!({"on_hand": on_hand.max(0)}))).await?;
        if !status.is_success() {
            tracing::warn!(sku, answer = %answer, "the new product's stock was not set");
        }
    }
    if let Some(p) = &picture {
        let (content_type, body) = picture_form(p, &get("alt"));
        let path = format!("/api/v1/admin/products/{}/media", encode(&id));
        let (status, answer) = site.api.send_bytes(Method::POST, &path, &staff.headers(), &content_type, body).await?;
        if !status.is_success() {
            let message = format!("The product was made, but not its picture: {}", answer["error"]["message"].as_str().unwrap_or("refused"));
            return Ok(new_product_page(&site, &staff, get("csrf"), StatusCode::UNPROCESSABLE_ENTITY, message));
        }
    }
    Ok(Redirect::to("/admin/products").into_response())
}

// Pictures

/// A product's picture on its pictures page.
struct PictureView {
    id: String,
    /// The smallest copy, to show it by.
    thumbnail: String,
    url: String,
    alt: String,
}

#[derive(Template)]
#[template(path = "admin/pictures.html")]
struct PicturesPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    csrf: String,
    /// The product's console page, and where the forms post.
    base: String,
    title: String,
    pictures: Vec<PictureView>,
    message: String,
    done: &'static str,
}

/// The staff member allowed to change the catalog, or the answer for anyone else.
async fn catalog_staff(site: &Site, headers: &HeaderMap) -> Result<Result<Staff, Response>, PageError> {
    match staff(site, headers).await? {
        Gate::In(s) if s.may(Permission::CatalogWrite) => Ok(Ok(s)),
        Gate::In(_) => Err(forbidden()),
        Gate::Out(r) => Ok(Err(r)),
    }
}

async fn pictures_page(site: &Site, headers: &HeaderMap, staff: &Staff, id: &str, status: StatusCode, message: String, done: &'static str) -> Result<Response, PageError> {
    let product = site.staff_get(staff, &format!("/api/v1/admin/products/{}", encode(id))).await?;
    let pictures = product["media"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let url = m["url"].as_str().unwrap_or_default().to_owned();
            PictureView {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                thumbnail: m["thumbnails"][0]["url"].as_str().map_or_else(|| url.clone(), str::to_owned),
                url,
                alt: m["alt"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect();
    let (csrf, set) = session::csrf(headers, site.secure());
    let page = PicturesPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav(),
        csrf,
        base: format!("/admin/products/{}", encode(id)),
        title: product["title"].as_str().unwrap_or(id).to_owned(),
        pictures,
        message,
        done,
    };
    let mut response = no_store((status, render(&page)).into_response());
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

pub async fn pictures(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<DoneQuery>) -> Result<Response, PageError> {
    let staff = match catalog_staff(&site, &headers).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let done = match q.done.as_str() {
        "added" => "The picture is added.",
        "alt" => "The description is saved.",
        "first" => "That picture now comes first.",
        "removed" => "The picture is removed.",
        _ => "",
    };
    pictures_page(&site, &headers, &staff, &id, StatusCode::OK, String::new(), done).await
}

/// Uploads a picture (with its description) to a product.
pub async fn add_picture(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, mut form: axum::extract::Multipart) -> Result<Response, PageError> {
    let staff = match catalog_staff(&site, &headers).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let (mut csrf, mut alt, mut picture) = (String::new(), String::new(), None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return pictures_page(&site, &headers, &staff, &id, StatusCode::UNPROCESSABLE_ENTITY, e.body_text(), "").await,
        };
        match field.name().unwrap_or_default() {
            "image" => {
                let name = field.file_name().unwrap_or("picture").to_owned();
                let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
                let bytes = field.bytes().await.map_err(|e| PageError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
                picture = Some(Picture { name, content_type, bytes: bytes.to_vec() }).filter(|p| !p.bytes.is_empty());
            }
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "alt" => alt = field.text().await.unwrap_or_default().trim().to_owned(),
            _ => {}
        }
    }
    if !session::csrf_ok(&headers, &csrf) {
        return Err(PageError::expired_form());
    }
    let Some(picture) = picture else {
        return pictures_page(&site, &headers, &staff, &id, StatusCode::UNPROCESSABLE_ENTITY, "Choose a picture to upload.".into(), "").await;
    };
    let (content_type, body) = picture_form(&picture, &alt);
    let path = format!("/api/v1/admin/products/{}/media", encode(&id));
    let (status, answer) = site.api.send_bytes(Method::POST, &path, &staff.headers(), &content_type, body).await?;
    if status.is_success() {
        return Ok(Redirect::to(&format!("/admin/products/{}/pictures?done=added", encode(&id))).into_response());
    }
    let (status, message) = crate::console::refusal(status, &answer);
    pictures_page(&site, &headers, &staff, &id, status, message, "").await
}

#[derive(Deserialize)]
pub struct PictureForm {
    #[serde(default)]
    csrf: String,
    /// `alt` (save the description), `first` (move it first) or `remove`.
    action: String,
    #[serde(default)]
    alt: String,
}

/// Describes, moves first or removes one of a product's pictures.
pub async fn change_picture(State(site): State<Site>, headers: HeaderMap, Path((id, media)): Path<(String, String)>, Form(f): Form<PictureForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let staff = match catalog_staff(&site, &headers).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let path = format!("/api/v1/admin/products/{}/media/{}", encode(&id), encode(&media));
    let (method, body, done) = match f.action.as_str() {
        "alt" => (Method::PATCH, Some(json!({"alt": f.alt.trim()})), "alt"),
        "first" => (Method::PATCH, Some(json!({"position": 0})), "first"),
        "remove" => (Method::DELETE, None, "removed"),
        _ => return Err(PageError::unknown_action()),
    };
    let (status, answer) = site.api.send_as(method, &path, &staff.headers(), body).await?;
    if status.is_success() {
        return Ok(Redirect::to(&format!("/admin/products/{}/pictures?done={done}", encode(&id))).into_response());
    }
    let (status, message) = crate::console::refusal(status, &answer);
    pictures_page(&site, &headers, &staff, &id, status, message, "").await
}

// Import and export

#[derive(Template)]
#[template(path = "admin/import.html")]
struct ImportPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Vec<(&'static str, &'static str)>,
    csrf: String,
    currency: String,
    message: String,
    /// (rows, created, updated, variants created, variants updated)
    totals: Option<(i64, i64, i64, i64, i64)>,
    /// (line, handle, column, reason)
    errors: Vec<(i64, String, String, String)>,
}

impl ImportPage<'_> {
    fn respond(&self, status: StatusCode, set: Option<header::HeaderValue>) -> Response {
        let mut response = no_store((status, render(self)).into_response());
        if let Some(c) = set {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
        response
    }
}

pub async fn import_form(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::CatalogWrite) {
        return Err(forbidden());
    }
    let (csrf, set) = session::csrf(&headers, site.secure());
    let page = ImportPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav(), csrf, currency: site.currency.clone(), message: String::new(), totals: None, errors: Vec::new() };
    Ok(page.respond(StatusCode::OK, set))
}

/// Imports a Shopify product CSV through the catalog API and shows its per-row report.
pub async fn import(State(site): State<Site>, headers: HeaderMap, mut form: axum::extract::Multipart) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    let (mut csrf, mut currency, mut file) = (String::new(), site.currency.clone(), Vec::new());
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(PageError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text())),
        };
        match field.name().unwrap_or_default() {
            "file" => file = field.bytes().await.map_err(|e| PageError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?.to_vec(),
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "currency" => currency = field.text().await.unwrap_or_default().trim().to_owned(),
            _ => {}
        }
    }
    if !session::csrf_ok(&headers, &csrf) {
        return Err(PageError::expired_form());
    }
    let mut page = ImportPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav(), csrf, currency: currency.clone(), message: String::new(), totals: None, errors: Vec::new() };
    if file.is_empty() {
        page.message = "Choose a CSV file to import.".into();
        return Ok(page.respond(StatusCode::UNPROCESSABLE_ENTITY, None));
    }
    let path = format!("/api/v1/admin/products/import?currency={}", encode(&currency));
    let (status, report) = site.api.send_bytes(Method::POST, &path, &staff.headers(), "text/csv", file).await?;
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    if !status.is_success() {
        page.message = report["error"]["message"].as_str().unwrap_or("The file could not be imported.").to_owned();
        return Ok(page.respond(StatusCode::UNPROCESSABLE_ENTITY, None));
    }
    let n = |k: &str| report[k].as_i64().unwrap_or(0);
    page.totals = Some((n("rows"), n("products_created"), n("products_updated"), n("variants_created"), n("variants_updated")));
    page.errors = report["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| (e["line"].as_i64().unwrap_or(0), e["handle"].as_str().unwrap_or_default().to_owned(), e["column"].as_str().unwrap_or_default().to_owned(), e["reason"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(page.respond(StatusCode::OK, None))
}

/// Every product as a Shopify product CSV, downloaded.
pub async fn export(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let staff = match staff(&site, &headers).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::CatalogWrite) {
        return Err(forbidden());
    }
    let path = format!("/api/v1/admin/products/export?currency={}", encode(&site.currency));
    let (status, kind, bytes) = site.api.get_raw(&path, &staff.headers()).await?;
    if !status.is_success() {
        return Err(PageError::from(ApiError::Status { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }));
    }
    Ok(no_store(([(header::CONTENT_TYPE, kind), (header::CONTENT_DISPOSITION, "attachment; filename=\"products.csv\"".to_owned())], bytes).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_bar_a_day_scaled_to_the_best() {
        let svg = sales_chart(&[("2026-11-24".into(), 0), ("2026-11-25".into(), 5000)], "USD");
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(r#"height="160""#) && svg.contains("<title>2026-11-25: 50.00 USD</title>"));
        assert_eq!(last_days(30).len(), 30);
    }
}
