//! The admin console (`/admin`): staff sign in like anyone else; each page
//! and link is shown only to staff whose role grants its permission, and
//! every action is the staff API's, which checks the permission again.

use askama::Template;
use crate::form::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use kernel::auth::{Permission, Role, permissions_of};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::account::{ACCESS, AddressFields};
use crate::api::{ApiError, encode};
use crate::console::Menu;
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

    /// The console's menu as this person sees it: the sections their role
    /// may open, in their groups (a group with none left out), with the
    /// one `here` (a page's path) is in marked.
    pub(crate) fn nav(&self, here: &str) -> Nav {
        let within = |path: &str| here == path || here.strip_prefix(path).is_some_and(|rest| rest.starts_with('/'));
        let mut links: Vec<(Menu, &'static str, &'static str)> = Vec::new();
        if self.may(Permission::OrdersRead) {
            links.push((Menu::Sales, "/admin/orders", "Orders"));
        }
        for s in crate::sections::SECTIONS.iter().filter(|s| self.may(s.read)) {
            links.push((s.menu, s.path, s.title));
        }
        let groups = Menu::ALL
            .iter()
            .map(|menu| NavGroup {
                id: menu.id(),
                heading: menu.heading(),
                links: links.iter().filter(|l| l.0 == *menu).map(|&(_, url, label)| NavLink { url, label, current: within(url) }).collect(),
            })
            .filter(|g| !g.links.is_empty())
            .collect();
        Nav { home: here == "/admin", groups }
    }
}

/// The console's menu, as the pages draw it.
pub(crate) struct Nav {
    /// The dashboard is the page shown.
    pub(crate) home: bool,
    pub(crate) groups: Vec<NavGroup>,
}

/// A group of the menu (Sales, Catalog, ...) with the links one person may follow.
pub(crate) struct NavGroup {
    pub(crate) id: &'static str,
    pub(crate) heading: &'static str,
    pub(crate) links: Vec<NavLink>,
}

pub(crate) struct NavLink {
    pub(crate) url: &'static str,
    pub(crate) label: &'static str,
    /// The page shown is this section's (or one of its records).
    pub(crate) current: bool,
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

/// The cookie that remembers which console page a signed-out visitor asked
/// for, so that signing in leads back to it.
const ASKED: &str = "console_page";

/// The name [`ASKED`] has in this shop's requests (`__Host-` over HTTPS).
fn asked_cookie(site: &Site) -> String {
    if site.secure() { format!("{}{ASKED}", session::HOST_PREFIX) } else { ASKED.to_owned() }
}

/// A console address fit to be led to after signing in: a path under
/// `/admin` of this shop (never another site's, however spelled), not too long.
fn console_path(path: &str) -> Option<&str> {
    let under = path.strip_prefix("/admin")?;
    let fits = under.is_empty() || under.starts_with(['/', '?']);
    let odd = path.contains("//") || path.contains('\\') || path.chars().any(|c| c.is_control() || c.is_whitespace());
    (fits && !odd && path.len() <= 1024).then_some(path)
}

/// [`staff`] for a page someone may open from a link: when they are not
/// signed in, they are sent to sign in and the page is remembered.
pub(crate) async fn staff_asking(site: &Site, headers: &HeaderMap, asked: &axum::http::Uri) -> Result<Gate, PageError> {
    use base64::Engine;
    let gate = staff(site, headers).await?;
    let Gate::Out(mut response) = gate else { return Ok(gate) };
    let path = asked.path_and_query().map(|p| p.as_str()).unwrap_or("/admin");
    if let Some(path) = console_path(path) {
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path);
        if let Some(c) = session::set_cookie(ASKED, Some(&value), site.secure()) {
            response.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    Ok(Gate::Out(response))
}

/// Where someone who just signed in (with `access`) lands: staff on the
/// console page they asked for before signing in, or its dashboard;
/// everyone else on their account. With the cookie that forgets the page
/// asked for, when there was one.
pub(crate) async fn landing(site: &Site, headers: &HeaderMap, access: &str) -> (String, Option<header::HeaderValue>) {
    use base64::Engine;
    let asked = session::cookie(headers, &asked_cookie(site))
        .and_then(|v| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|path| console_path(&path).map(str::to_owned));
    let forget = session::cookie(headers, &asked_cookie(site)).and_then(|_| session::set_cookie(ASKED, None, site.secure()));
    let staff = match site.api.send_as(Method::GET, "/api/v1/me", &[("authorization", format!("Bearer {access}"))], None).await {
        Ok((status, me)) if status.is_success() => serde_json::from_value::<Vec<Role>>(me["roles"].clone()).unwrap_or_default().iter().any(|r| r.is_staff()),
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not tell whether who signed in is staff");
            false
        }
    };
    let to = match (staff, asked) {
        (true, Some(path)) => path,
        (true, None) => "/admin".to_owned(),
        (false, _) => "/account".to_owned(),
    };
    (to, forget)
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
    nav: Nav,
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

pub async fn dashboard(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri) -> Result<Response, PageError> {
    let staff = match staff_asking(&site, &headers, &uri).await? {
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
        nav: staff.nav("/admin"),
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
    nav: Nav,
    filters: OrdersQuery,
    orders: Vec<(String, i64, String, String, String, String)>,
    next: Option<String>,
}

pub async fn orders(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri, Query(q): Query<OrdersQuery>) -> Result<Response, PageError> {
    let staff = match staff_asking(&site, &headers, &uri).await? {
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
    Ok(no_store(render(&OrdersPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav("/admin/orders"), filters: q, orders, next })))
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
    nav: Nav,
    csrf: String,
    id: String,
    number: i64,
    status: String,
    email: String,
    lines: Vec<(String, String, i64, i64)>,
    /// Where it goes, on one line.
    ship_to: String,
    /// The shipping the customer chose and paid for: (name, price, delivery time).
    shipping: Option<(String, String, String)>,
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

/// An order's shipping method as it was chosen: its name, what the customer
/// paid for it (minor units, or an amount with its currency) and the days it
/// takes; `None` when the order ships nothing.
fn shipping_of(method: &Value, currency: &str) -> Option<(String, String, String)> {
    let name = method["name"].as_str().filter(|n| !n.trim().is_empty())?.to_owned();
    let amount = method["amount"].as_i64().map(|a| (a, currency)).or_else(|| {
        let a = &method["amount"];
        Some((a["amount"].as_i64()?, a["currency"].as_str().unwrap_or(currency)))
    });
    let price = match amount {
        Some((0, _)) => "Free".to_owned(),
        Some((a, c)) => money(a, c),
        None => String::new(),
    };
    let days = match (method["min_days"].as_i64(), method["max_days"].as_i64()) {
        (Some(a), Some(b)) if a == b => format!("{a} day{}", if a == 1 { "" } else { "s" }),
        (Some(a), Some(b)) => format!("{a}–{b} days"),
        _ => String::new(),
    };
    Some((name, price, days))
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
    let shipping = shipping_of(&record["shipping_method"], record["currency"].as_str().unwrap_or(&site.currency));
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
        nav: staff.nav("/admin/orders"),
        csrf,
        id: o.id,
        number: o.number,
        status: o.status.replace('_', " "),
        email: o.email.unwrap_or_default(),
        lines: o.lines.iter().map(|l| (item_name(&l.title, &l.variant_title), l.sku.clone(), l.quantity, l.fulfilled)).collect(),
        ship_to,
        shipping,
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

pub async fn order(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri, Path(id): Path<String>) -> Result<Response, PageError> {
    let staff = match staff_asking(&site, &headers, &uri).await? {
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

/// A row of the new product's variants: its option value, SKU, price and stock.
struct NewRow {
    value: Input,
    sku: Input,
    price: Input,
    stock: Input,
}

/// The new-product form, as typed.
struct NewProductForm {
    title: Input,
    brand: Input,
    description: Input,
    status: Input,
    option: Input,
    rows: Vec<NewRow>,
    alt: Input,
    categories: Vec<String>,
}

impl NewProductForm {
    /// The form from what was posted (empty when nothing was), each field named as it is labelled.
    fn of(fields: &std::collections::HashMap<String, String>, categories: Vec<String>, currency: &str) -> NewProductForm {
        let input = |name: &str, label: &str| Input { id: name.to_owned(), name: name.to_owned(), label: label.to_owned(), value: fields.get(name).cloned().unwrap_or_default(), error: String::new() };
        NewProductForm {
            title: input("title", "Title"),
            brand: input("brand", "Brand (optional)"),
            description: input("description", "Description (Markdown)"),
            status: input("status", "Status"),
            option: input("option", "Option name (e.g. Size; empty for one variant)"),
            rows: (1..=VARIANT_ROWS)
                .map(|n| NewRow {
                    value: input(&format!("value{n}"), "Option value"),
                    sku: input(&format!("sku{n}"), "SKU"),
                    price: input(&format!("price{n}"), &format!("Price ({currency})")),
                    stock: Input { value: fields.get(&format!("stock{n}")).cloned().unwrap_or_else(|| "0".into()), ..input(&format!("stock{n}"), "Stock") },
                })
                .collect(),
            alt: input("alt", "Picture's description, for those who cannot see it"),
            categories,
        }
    }

    fn errors(&self) -> Vec<(String, String)> {
        [&self.title, &self.option]
            .into_iter()
            .chain(self.rows.iter().flat_map(|r| [&r.value, &r.sku, &r.price, &r.stock]))
            .filter(|i| !i.error.is_empty())
            .map(|i| (i.id.clone(), i.error.clone()))
            .collect()
    }
}

#[derive(Template)]
#[template(path = "admin/new_product.html")]
struct NewProductPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Nav,
    csrf: String,
    form: NewProductForm,
    statuses: Vec<(&'static str, &'static str, bool)>,
    categories: Vec<CategoryChoice>,
    errors: Vec<(String, String)>,
    message: String,
}

async fn new_product_page(site: &Site, staff: &Staff, csrf: String, form: NewProductForm, status: StatusCode, message: String) -> Result<Response, PageError> {
    let tree = site.staff_get(staff, "/api/v1/categories").await?;
    let chosen = if form.status.value.is_empty() { "active" } else { form.status.text() };
    let page = NewProductPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav("/admin/products"),
        csrf,
        statuses: STATUSES.iter().filter(|(s, _)| *s != "archived").map(|(value, label)| (*value, *label, chosen == *value)).collect(),
        categories: category_choices(&tree, &form.categories),
        errors: form.errors(),
        form,
        message,
    };
    Ok(no_store((status, render(&page)).into_response()))
}

pub async fn new_product(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri) -> Result<Response, PageError> {
    let staff = match staff_asking(&site, &headers, &uri).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::CatalogWrite) {
        return Err(forbidden());
    }
    let (csrf, set) = session::csrf(&headers, site.secure());
    let form = NewProductForm::of(&Default::default(), Vec::new(), &site.currency);
    let mut response = new_product_page(&site, &staff, csrf, form, StatusCode::OK, String::new()).await?;
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
    let mut categories = Vec::new();
    let mut picture: Option<Picture> = None;
    let mut unread = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                unread = Some(e.body_text());
                break;
            }
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
            if name == "categories" {
                categories.push(text);
            } else {
                fields.insert(name, text);
            }
        }
    }
    let csrf = fields.get("csrf").cloned().unwrap_or_default();
    if !session::csrf_ok(&headers, &csrf) {
        return Err(PageError::expired_form());
    }
    let mut typed = NewProductForm::of(&fields, categories, &site.currency);
    if let Some(why) = unread {
        tracing::warn!(error = %why, "a new product's form could not be read");
        let message = "The form could not be read whole (is the picture too large?). Please check it and try again.".to_owned();
        return new_product_page(&site, &staff, csrf, typed, StatusCode::UNPROCESSABLE_ENTITY, message).await;
    }
    let currency = shop_currency(&site)?;
    if typed.title.text().is_empty() {
        typed.title.error = "Give the product a title.".into();
    }
    let option = typed.option.text().to_owned();
    let mut values: Vec<String> = Vec::new();
    let mut variants = Vec::new();
    let mut stock = Vec::new();
    let filled = typed.rows.iter().filter(|r| !r.sku.text().is_empty()).count();
    for (n, row) in typed.rows.iter_mut().enumerate() {
        let sku = row.sku.text().to_owned();
        if sku.is_empty() {
            if n == 0 && filled == 0 {
                row.sku.error = "Give the product's first variant a SKU, e.g. TEE-BLUE-M.".into();
            } else if !row.price.text().is_empty() || !row.value.text().is_empty() {
                row.sku.error = "Give this variant a SKU, or leave its row empty.".into();
            }
            continue;
        }
        let price = amount_in(currency, &mut row.price, &format!("the price of {sku}"));
        if price.is_none() && row.price.error.is_empty() {
            row.price.error = format!("Enter the price of {sku}, like {}.", currency.format_decimal(6899));
        }
        let units = if row.stock.text().is_empty() { Some(0) } else { count_in(&mut row.stock, MAX_UNITS, "Enter the units in stock as a whole number, 0 or more.") };
        let value = row.value.text().to_owned();
        if !option.is_empty() && value.is_empty() {
            row.value.error = format!("Give {sku} its {option}, e.g. M.");
        } else if !option.is_empty() && values.iter().any(|v| v.eq_ignore_ascii_case(&value)) {
            row.value.error = format!("Another variant is already {value}.");
        }
        if option.is_empty() && filled > 1 {
            typed.option.error = "Name the option the variants differ by, e.g. Size.".into();
        }
        let option_values = if option.is_empty() { Vec::new() } else { vec![value.clone()] };
        values.push(value);
        variants.push(json!({"sku": sku, "prices": {site.currency.as_str(): price.unwrap_or(0)}, "option_values": option_values}));
        stock.push((sku, units.unwrap_or(0)));
    }
    if !typed.errors().is_empty() {
        return new_product_page(&site, &staff, csrf, typed, StatusCode::UNPROCESSABLE_ENTITY, picture.as_ref().map(|_| "Choose the picture again, too.".to_owned()).unwrap_or_default()).await;
    }
    let status = if typed.status.text() == "draft" { "draft" } else { "active" };
    let mut body = json!({"title": typed.title.text(), "description": typed.description.text(), "status": status, "variants": variants, "categories": typed.categories});
    if !typed.brand.text().is_empty() {
        body["brand"] = json!(typed.brand.text());
    }
    if !option.is_empty() {
        body["options"] = json!([{"name": option, "values": values}]);
    }
    let (status, product) = site.api.send_as(Method::POST, "/api/v1/admin/products", &staff.headers(), Some(body)).await?;
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    if !status.is_success() {
        let (status, why) = crate::console::refusal(status, &product);
        return new_product_page(&site, &staff, csrf, typed, status, format!("The product was not made: {why}")).await;
    }
    let id = product["id"].as_str().unwrap_or_default().to_owned();
    for (sku, on_hand) in stock {
        let path = format!("/api/v1/admin/inventory/{}", encode(&sku));
        let (status, answer) = site.api.send_as(Method::PUT, &path, &staff.headers(), Some(json!({"on_hand": on_hand}))).await?;
        if !status.is_success() {
            tracing::warn!(sku, answer = %answer, "the new product's stock was not set");
        }
    }
    if let Some(p) = &picture {
        let (content_type, body) = picture_form(p, typed.alt.text());
        let path = format!("/api/v1/admin/products/{}/media", encode(&id));
        let (status, answer) = site.api.send_bytes(Method::POST, &path, &staff.headers(), &content_type, body).await?;
        if !status.is_success() {
            // The product is made: its pictures' page asks for the picture again.
            tracing::info!(product = id, answer = %answer, "a new product's picture was refused");
            return Ok(Redirect::to(&format!("/admin/products/{}/pictures?done=refused", encode(&id))).into_response());
        }
    }
    Ok(Redirect::to("/admin/products").into_response())
}

// The product editor

/// Options a product may have (as in Shopify's format).
const MAX_OPTIONS: usize = 3;
/// The highest price the console takes, in minor units.
const MAX_PRICE: i64 = 1_000_000_000;
/// The heaviest variant, in grams.
const MAX_GRAMS: i64 = 1_000_000;
/// The most units counted in at once.
const MAX_UNITS: i64 = 1_000_000;

/// A field of a product form: its name, what it holds as typed, and what
/// is wrong with it (shown next to it).
#[derive(Clone, Default)]
struct Input {
    id: String,
    name: String,
    /// What it is called, for the label (seen or read out).
    label: String,
    value: String,
    error: String,
}

impl Input {
    fn new(name: &str, value: impl Into<String>) -> Input {
        Input { id: format!("f-{}", name.replace('.', "-")), name: name.to_owned(), label: String::new(), value: value.into(), error: String::new() }
    }

    fn text(&self) -> &str {
        self.value.trim()
    }
}

/// An option of the product: its name and its values, comma-separated.
struct OptionRow {
    name: Input,
    values: Input,
}

/// A row of the variants' table.
struct VariantRow {
    sku: Input,
    /// One per option of the product, in its order.
    values: Vec<Input>,
    price: Input,
    compare: Input,
    weight: Input,
    /// Units counted in, for a new variant.
    stock: Input,
    /// What is available now, for a variant that exists, and its stock's page.
    available: String,
    stock_page: String,
    remove: Input,
    removed: bool,
}

impl VariantRow {
    fn blank(prefix: &str, options: usize) -> VariantRow {
        let field = |f: &str| Input::new(&format!("{prefix}.{f}"), "");
        VariantRow {
            sku: field("sku"),
            values: (1..=options).map(|i| field(&format!("value{i}"))).collect(),
            price: field("price"),
            compare: field("compare"),
            weight: field("weight"),
            stock: field("stock"),
            available: String::new(),
            stock_page: String::new(),
            remove: field("remove"),
            removed: false,
        }
    }

    fn inputs(&mut self) -> impl Iterator<Item = &mut Input> {
        [&mut self.sku, &mut self.price, &mut self.compare, &mut self.weight, &mut self.stock].into_iter().chain(self.values.iter_mut())
    }

    fn errors(&self) -> impl Iterator<Item = &Input> {
        [&self.sku, &self.price, &self.compare, &self.weight, &self.stock].into_iter().chain(self.values.iter()).filter(|i| !i.error.is_empty())
    }
}

/// A category the product may be in, named with the categories above it.
struct CategoryChoice {
    id: String,
    label: String,
    chosen: bool,
}

/// The product form as it is filled in: from the product, then from what was posted.
struct ProductForm {
    title: Input,
    description: Input,
    status: Input,
    brand: Input,
    tags: Input,
    seo_title: Input,
    seo_description: Input,
    categories: Vec<String>,
    categories_error: String,
    options: Vec<OptionRow>,
    variants: Vec<VariantRow>,
    new: VariantRow,
}

const STATUSES: [(&str, &str); 3] = [("active", "Active: for sale"), ("draft", "Draft: hidden"), ("archived", "Archived: no longer sold")];

/// A variant's price in the shop's currency (minor units): its price or its "was" price.
fn price_of(site: &Site, variant: &Value, key: &str) -> Option<i64> {
    let price = variant.get(key)?.get(&site.currency)?;
    price.get("amount").and_then(Value::as_i64).or_else(|| price.as_i64())
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The options a product declares: (name, values).
fn options_of(product: &Value) -> Vec<(String, Vec<String>)> {
    product["options"].as_array().into_iter().flatten().map(|o| (o["name"].as_str().unwrap_or_default().to_owned(), strings(&o["values"]))).collect()
}

/// The name a variant is given from its option values (as the catalog names it).
fn variant_title(values: &[String]) -> String {
    if values.is_empty() { "Default".to_owned() } else { values.join(" / ") }
}

impl ProductForm {
    /// The form filled in from the product.
    fn of(site: &Site, product: &Value) -> ProductForm {
        let currency = kernel::money::Currency::parse(&site.currency).ok();
        let decimal = |amount: Option<i64>| match (amount, currency) {
            (Some(a), Some(c)) => c.format_decimal(a),
            (Some(a), None) => a.to_string(),
            (None, _) => String::new(),
        };
        let text = |key: &str| product[key].as_str().unwrap_or_default().to_owned();
        let options = options_of(product);
        let mut rows: Vec<OptionRow> = options
            .iter()
            .enumerate()
            .map(|(i, (name, values))| OptionRow { name: Input::new(&format!("option{}.name", i + 1), name.clone()), values: Input::new(&format!("option{}.values", i + 1), values.join(", ")) })
            .collect();
        while rows.len() < MAX_OPTIONS {
            let i = rows.len() + 1;
            rows.push(OptionRow { name: Input::new(&format!("option{i}.name"), ""), values: Input::new(&format!("option{i}.values"), "") });
        }
        let variants = product["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(n, v)| {
                let mut row = VariantRow::blank(&format!("variant{}", n + 1), options.len());
                row.sku.value = v["sku"].as_str().unwrap_or_default().to_owned();
                row.stock_page = format!("/admin/inventory/{}", encode(&row.sku.value));
                for (input, value) in row.values.iter_mut().zip(strings(&v["option_values"])) {
                    input.value = value;
                }
                row.price.value = decimal(price_of(site, v, "prices"));
                row.compare.value = decimal(price_of(site, v, "compare_at_prices"));
                row.weight.value = v["weight_grams"].as_i64().map(|w| w.to_string()).unwrap_or_default();
                row.available = match v["available"].as_i64() {
                    Some(n) => n.to_string(),
                    None => "Not counted".to_owned(),
                };
                row
            })
            .collect();
        ProductForm {
            title: Input::new("title", text("title")),
            description: Input::new("description", text("description")),
            status: Input::new("status", text("status")),
            brand: Input::new("brand", text("brand")),
            tags: Input::new("tags", strings(&product["tags"]).join(", ")),
            seo_title: Input::new("seo_title", text("seo_title")),
            seo_description: Input::new("seo_description", text("seo_description")),
            categories: product["categories"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).map(str::to_owned).collect(),
            categories_error: String::new(),
            options: rows,
            variants,
            new: VariantRow::blank("new", options.len()),
        }
    }

    /// What was posted, over the product's own values. A field not posted
    /// keeps the product's value; a variant's row is found by its SKU.
    fn posted(mut self, posted: &[(String, String)]) -> ProductForm {
        let find = |name: &str| posted.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for input in [&mut self.title, &mut self.description, &mut self.status, &mut self.brand, &mut self.tags, &mut self.seo_title, &mut self.seo_description] {
            if let Some(v) = find(&input.name) {
                input.value = v;
            }
        }
        for row in &mut self.options {
            for input in [&mut row.name, &mut row.values] {
                if let Some(v) = find(&input.name) {
                    input.value = v;
                }
            }
        }
        self.categories = posted.iter().filter(|(k, _)| k == "categories").map(|(_, v)| v.clone()).collect();
        // Which posted row is which variant: `variantN.sku` names it.
        let rows: Vec<(&str, &str)> = posted.iter().filter_map(|(k, v)| Some((k.strip_prefix("variant")?.strip_suffix(".sku")?, v.as_str()))).collect();
        for row in &mut self.variants {
            let Some((n, _)) = rows.iter().find(|(_, sku)| *sku == row.sku.value) else { continue };
            let prefix = format!("variant{n}");
            for input in row.inputs().filter(|i| !i.name.ends_with(".sku")) {
                let field = input.name.rsplit('.').next().unwrap_or_default().to_owned();
                if let Some(v) = find(&format!("{prefix}.{field}")) {
                    input.value = v;
                }
            }
            row.removed = find(&format!("{prefix}.remove")).is_some();
        }
        for input in self.new.inputs() {
            if let Some(v) = find(&input.name) {
                input.value = v;
            }
        }
        self
    }

    /// Every field with something wrong, in the form's order.
    fn errors(&self) -> Vec<(String, String)> {
        let mut all: Vec<&Input> = vec![&self.title, &self.status];
        all.extend(self.options.iter().flat_map(|o| [&o.name, &o.values]));
        all.extend(self.variants.iter().flat_map(VariantRow::errors));
        all.extend(self.new.errors());
        let mut errors: Vec<(String, String)> = all.into_iter().filter(|i| !i.error.is_empty()).map(|i| (i.id.clone(), i.error.clone())).collect();
        if !self.categories_error.is_empty() {
            errors.push(("categories".to_owned(), self.categories_error.clone()));
        }
        errors
    }
}

/// The currency the shop's prices are typed in.
fn shop_currency(site: &Site) -> Result<kernel::money::Currency, PageError> {
    kernel::money::Currency::parse(&site.currency).map_err(|_| PageError(StatusCode::INTERNAL_SERVER_ERROR, "The shop's currency is not set up right.".into()))
}

/// An amount typed in the shop's currency, in minor units: `None` when
/// left empty, and the field's error when it is not an amount.
fn amount_in(currency: kernel::money::Currency, input: &mut Input, what: &str) -> Option<i64> {
    let example = currency.format_decimal(6899);
    if input.text().is_empty() {
        return None;
    }
    match currency.parse_decimal(input.text()) {
        Ok(a) if a <= MAX_PRICE => Some(a),
        Ok(_) => {
            input.error = format!("Enter {what} under {} {currency}.", currency.format_decimal(MAX_PRICE));
            None
        }
        Err(_) => {
            input.error = format!("Enter {what} as an amount in {currency}, like {example}.");
            None
        }
    }
}

/// A whole number typed in a field, from 0 to `max`; `None` when left empty.
fn count_in(input: &mut Input, max: i64, message: &str) -> Option<i64> {
    if input.text().is_empty() {
        return None;
    }
    match input.text().parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Some(n),
        _ => {
            input.error = message.to_owned();
            None
        }
    }
}

/// The API calls a saved product form makes, in their order.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Variants to remove first.
    removed: Vec<String>,
    /// The product's own fields (a PATCH).
    product: serde_json::Map<String, Value>,
    /// Options that offer both the old values and the new while the
    /// variants move to the new ones, then the options as asked.
    interim: Option<Value>,
    options: Option<Value>,
    /// Changed variants: (SKU, PATCH).
    variants: Vec<(String, Value)>,
    /// A new variant, and the units counted in for it.
    new: Option<(Value, Option<i64>)>,
}

/// Checks the form against the product as it is now, and plans the calls
/// that make it so; on a mistake, the fields say what is wrong (`None`).
fn plan(site: &Site, currency: kernel::money::Currency, product: &Value, form: &mut ProductForm, known: &[CategoryChoice]) -> Option<Plan> {
    let mut plan = Plan::default();
    let mut body = serde_json::Map::new();
    // The product's own fields.
    if form.title.text().is_empty() {
        form.title.error = "Give the product a title.".into();
    }
    if !STATUSES.iter().any(|(s, _)| *s == form.status.text()) {
        form.status.error = "Choose whether the product is active, a draft or archived.".into();
    }
    let optional = |i: &Input| if i.text().is_empty() { Value::Null } else { Value::String(i.text().to_owned()) };
    body.insert("title".into(), json!(form.title.text()));
    body.insert("description".into(), json!(form.description.text()));
    body.insert("status".into(), json!(form.status.text()));
    body.insert("brand".into(), optional(&form.brand));
    body.insert("tags".into(), json!(form.tags.text().split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>()));
    body.insert("seo_title".into(), optional(&form.seo_title));
    body.insert("seo_description".into(), optional(&form.seo_description));
    if form.categories.iter().any(|c| !known.iter().any(|k| k.id == *c)) {
        form.categories_error = "A category you chose is no longer in the shop: choose again.".into();
    }
    body.insert("categories".into(), json!(form.categories));

    // The options: as typed, each with the values the variants' rows use.
    let current = options_of(product);
    let kept: Vec<&VariantRow> = form.variants.iter().filter(|r| !r.removed).collect();
    let adding = !form.new.sku.text().is_empty();
    let mut options: Vec<(String, Vec<String>)> = Vec::new();
    // The form's row of each option, to tell what is wrong at it.
    let mut rows_of: Vec<usize> = Vec::new();
    let mut gap = false;
    for (i, row) in form.options.iter_mut().enumerate() {
        let name = row.name.text().to_owned();
        let typed: Vec<&str> = row.values.text().split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
        if name.is_empty() {
            if !typed.is_empty() {
                row.name.error = "Name this option, e.g. Size.".into();
            }
            gap = true;
            continue;
        }
        if gap {
            // The variants' columns follow the options' rows, from the first.
            row.name.error = "Fill in the options in order, from the first row.".into();
        }
        let mut values: Vec<String> = Vec::new();
        let new = adding.then_some(&form.new);
        let used = kept.iter().copied().chain(new).filter_map(|r| r.values.get(i)).map(Input::text);
        for v in typed.into_iter().chain(used) {
            if !v.is_empty() && !values.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                values.push(v.to_owned());
            }
        }
        if values.is_empty() {
            row.values.error = format!("Give {name} at least one value, e.g. S, M, L.");
        } else if options.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            row.name.error = format!("There is another option named {name}.");
        }
        options.push((name, values));
        rows_of.push(i);
    }
    // The catalog keeps each variant's values in step with the options: their
    // number changes only from none, or to none, while there is one variant.
    let single = product["variants"].as_array().map_or(0, Vec::len) <= 1;
    let (was, now) = (current.len(), options.len());
    if was != now && !(single && (was == 0 || now == 0)) {
        let (at, why) = if now > was {
            (rows_of.get(was).copied(), "Options can be added only while the product has none and a single variant: the variants would have no value for this one.")
        } else {
            ((0..was).find(|i| form.options.get(*i).is_some_and(|o| o.name.text().is_empty())), "The variants have a value for this option: it can be taken away only with all the others, from a product with a single variant.")
        };
        if let Some(row) = form.options.get_mut(at.unwrap_or(0)) {
            row.name.error = why.into();
        }
    }
    let spelled = |i: usize, v: &str| options.get(i).and_then(|(_, vs)| vs.iter().find(|x| x.eq_ignore_ascii_case(v))).cloned().unwrap_or_else(|| v.to_owned());
    let as_json = |o: &[(String, Vec<String>)]| json!(o.iter().map(|(n, v)| json!({"name": n, "values": v})).collect::<Vec<_>>());
    if options != current {
        // While variants move to new values, the options offer the old ones too.
        let mut interim = options.clone();
        if options.len() == current.len() {
            for r in &kept {
                for (i, (_, values)) in interim.iter_mut().enumerate() {
                    let old = product["variants"].as_array().into_iter().flatten().find(|v| v["sku"] == r.sku.value.as_str()).map(|v| strings(&v["option_values"])).unwrap_or_default();
                    if let Some(old) = old.get(i).filter(|o| !values.iter().any(|x| x.eq_ignore_ascii_case(o))) {
                        values.push(old.clone());
                    }
                }
            }
        }
        if interim != options {
            plan.interim = Some(as_json(&interim));
        }
        plan.options = Some(as_json(&options));
    }

    // The variants: what changed in each row.
    let columns = current.len();
    let mut combinations: Vec<Vec<String>> = Vec::new();
    let variants: Vec<&Value> = product["variants"].as_array().into_iter().flatten().collect();
    if form.variants.iter().all(|r| r.removed)
        && !adding
        && let Some(r) = form.variants.first_mut()
    {
        r.sku.error = "A product keeps at least one variant.".into();
    }
    for row in form.variants.iter_mut() {
        let Some(v) = variants.iter().find(|v| v["sku"] == row.sku.value.as_str()) else { continue };
        if row.removed {
            plan.removed.push(row.sku.value.clone());
            continue;
        }
        let sku = row.sku.value.clone();
        let price = amount_in(currency, &mut row.price, &format!("the price of {sku}"));
        if price.is_none() && row.price.error.is_empty() {
            row.price.error = format!("Enter the price of {sku}, like {}.", currency.format_decimal(6899));
        }
        let compare = amount_in(currency, &mut row.compare, "the price it was");
        let weight = count_in(&mut row.weight, MAX_GRAMS, "Enter the weight in whole grams, e.g. 350.");
        let mut values = Vec::new();
        for (i, input) in row.values.iter_mut().enumerate().take(columns) {
            if input.text().is_empty() && options.len() == columns {
                input.error = format!("Give {sku} a value for {}.", options.get(i).map_or("this option", |o| o.0.as_str()));
            }
            values.push(spelled(i, input.text()));
        }
        if columns > 0 && options.len() == columns {
            if combinations.iter().any(|c| c.iter().zip(&values).all(|(a, b)| a.eq_ignore_ascii_case(b)))
                && let Some(first) = row.values.first_mut()
            {
                first.error = format!("Another variant is already {}.", variant_title(&values));
            }
            combinations.push(values.clone());
        }
        let mut patch = serde_json::Map::new();
        if (price.is_some() && price != price_of(site, v, "prices")) || compare != price_of(site, v, "compare_at_prices") {
            // Prices replace all of a variant's: the other currencies' go along unchanged.
            let mut prices: serde_json::Map<String, Value> = v["prices"].as_object().into_iter().flatten().filter_map(|(c, p)| Some((c.clone(), json!(p["amount"].as_i64()?)))).collect();
            let mut was: serde_json::Map<String, Value> = v["compare_at_prices"].as_object().into_iter().flatten().filter_map(|(c, p)| Some((c.clone(), json!(p["amount"].as_i64()?)))).collect();
            if let Some(p) = price {
                prices.insert(site.currency.clone(), json!(p));
            }
            match compare {
                Some(c) => was.insert(site.currency.clone(), json!(c)),
                None => was.remove(&site.currency),
            };
            patch.insert("prices".into(), Value::Object(prices));
            patch.insert("compare_at_prices".into(), Value::Object(was));
        }
        if weight != v["weight_grams"].as_i64() && row.weight.error.is_empty() {
            patch.insert("weight_grams".into(), json!(weight));
        }
        let old = strings(&v["option_values"]);
        if columns > 0 && options.len() == columns && values != old {
            patch.insert("option_values".into(), json!(values));
            if v["title"].as_str() == Some(variant_title(&old).as_str()) {
                patch.insert("title".into(), json!(variant_title(&values)));
            }
        }
        if !patch.is_empty() {
            plan.variants.push((sku, Value::Object(patch)));
        }
    }
    if !adding {
        let row = &mut form.new;
        let typed = [&row.price, &row.compare, &row.weight, &row.stock].into_iter().chain(row.values.iter()).any(|i| !i.text().is_empty());
        if typed {
            row.sku.error = "Give the new variant a SKU, or leave its row empty.".into();
        }
    }
    if adding {
        let row = &mut form.new;
        let sku = row.sku.text().to_owned();
        if variants.iter().any(|v| v["sku"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&sku))) {
            row.sku.error = format!("{sku} is already a variant of this product.");
        } else if options.is_empty() {
            row.sku.error = "A product with several variants needs an option, such as Size: add one above and save, then add the variant.".into();
        } else if columns != options.len() {
            row.sku.error = "Save the new options first, then add the variant with its values.".into();
        }
        let price = amount_in(currency, &mut row.price, &format!("the price of {sku}"));
        if price.is_none() && row.price.error.is_empty() {
            row.price.error = format!("Enter the price of {sku}, like {}.", currency.format_decimal(6899));
        }
        let compare = amount_in(currency, &mut row.compare, "the price it was");
        let weight = count_in(&mut row.weight, MAX_GRAMS, "Enter the weight in whole grams, e.g. 350.");
        let stock = count_in(&mut row.stock, MAX_UNITS, "Enter the units in stock as a whole number, 0 or more.");
        let mut values = Vec::new();
        for (i, input) in row.values.iter_mut().enumerate().take(columns) {
            if input.text().is_empty() {
                input.error = format!("Give {sku} a value for {}.", options.get(i).map_or("this option", |o| o.0.as_str()));
            }
            values.push(spelled(i, input.text()));
        }
        if combinations.iter().any(|c| c.iter().zip(&values).all(|(a, b)| a.eq_ignore_ascii_case(b)))
            && let Some(first) = row.values.first_mut()
        {
            first.error = format!("Another variant is already {}.", variant_title(&values));
        }
        let mut variant = json!({"sku": sku, "prices": {site.currency.as_str(): price.unwrap_or(0)}, "option_values": values});
        if let Some(c) = compare {
            variant["compare_at_prices"] = json!({site.currency.as_str(): c});
        }
        if let Some(w) = weight {
            variant["weight_grams"] = json!(w);
        }
        plan.new = Some((variant, stock));
    }
    plan.product = body;
    if form.errors().is_empty() { Some(plan) } else { None }
}

impl ProductForm {
    /// Names every field for its label: in the table, with its variant's SKU.
    fn labelled(mut self, currency: &str) -> ProductForm {
        for (input, label) in [
            (&mut self.title, "Title"),
            (&mut self.description, "Description (Markdown)"),
            (&mut self.status, "Status"),
            (&mut self.brand, "Brand"),
            (&mut self.tags, "Tags, separated by commas"),
            (&mut self.seo_title, "Title for search engines"),
            (&mut self.seo_description, "Description for search engines"),
        ] {
            input.label = label.to_owned();
        }
        let names: Vec<String> = self.options.iter().enumerate().map(|(i, o)| if o.name.text().is_empty() { format!("Option {}", i + 1) } else { o.name.text().to_owned() }).collect();
        for (i, o) in self.options.iter_mut().enumerate() {
            o.name.label = format!("Name of option {}", i + 1);
            o.values.label = format!("Values of option {}", i + 1);
        }
        let name_row = |row: &mut VariantRow, of: &str| {
            for (i, v) in row.values.iter_mut().enumerate() {
                v.label = format!("{} of {of}", names.get(i).map_or("Option", String::as_str));
            }
            row.price.label = format!("Price of {of} ({currency})");
            row.compare.label = format!("Price {of} was before ({currency})");
            row.weight.label = format!("Weight of {of} in grams");
            row.stock.label = format!("Units of {of} in stock");
            row.remove.label = format!("Remove {of}");
        };
        for row in &mut self.variants {
            let sku = row.sku.value.clone();
            row.sku.label = "SKU".into();
            name_row(row, &sku);
        }
        self.new.sku.label = "SKU of a new variant".into();
        name_row(&mut self.new, "the new variant");
        self
    }
}

/// The shop's categories, each named with those above it (`Clothing › Hats`), in the tree's order.
fn category_choices(tree: &Value, chosen: &[String]) -> Vec<CategoryChoice> {
    fn walk(nodes: &Value, above: &str, chosen: &[String], out: &mut Vec<CategoryChoice>) {
        for node in nodes.as_array().into_iter().flatten() {
            let name = node["name"].as_str().unwrap_or_default();
            let label = if above.is_empty() { name.to_owned() } else { format!("{above} › {name}") };
            let id = node["id"].as_str().unwrap_or_default().to_owned();
            out.push(CategoryChoice { chosen: chosen.contains(&id), id, label: label.clone() });
            walk(&node["children"], &label, chosen, out);
        }
    }
    let mut out = Vec::new();
    walk(tree, "", chosen, &mut out);
    out
}

#[derive(Template)]
#[template(path = "admin/product.html")]
struct ProductPage<'a> {
    shop: &'a str,
    staff: String,
    nav: Nav,
    csrf: String,
    /// The product's console page, where its forms post.
    base: String,
    heading: String,
    /// Its page in the shop, while it is for sale.
    storefront: String,
    currency: String,
    form: ProductForm,
    statuses: Vec<(&'static str, &'static str, bool)>,
    categories: Vec<CategoryChoice>,
    /// The options' names, over their columns of the variants' table.
    columns: Vec<String>,
    /// Its pictures, small, with their descriptions.
    pictures: Vec<(crate::console::Thumb, String)>,
    /// (field id, what is wrong) for every field to correct.
    errors: Vec<(String, String)>,
    /// Why the catalog refused the last save.
    message: String,
    done: &'static str,
    /// Who edits may count new stock in too.
    counts_stock: bool,
}

#[allow(clippy::too_many_arguments)]
async fn product_page(site: &Site, headers: &HeaderMap, staff: &Staff, product: &Value, form: ProductForm, status: StatusCode, message: String, done: &'static str) -> Result<Response, PageError> {
    let tree = site.staff_get(staff, "/api/v1/categories").await?;
    let (csrf, set) = session::csrf(headers, site.secure());
    let form = form.labelled(&site.currency);
    let id = product["id"].as_str().unwrap_or_default();
    let columns = options_of(product).len();
    let page = ProductPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav("/admin/products"),
        csrf,
        base: format!("/admin/products/{}", encode(id)),
        heading: product["title"].as_str().unwrap_or(id).to_owned(),
        storefront: if product["status"] == "active" { format!("/products/{}", encode(product["slug"].as_str().unwrap_or_default())) } else { String::new() },
        currency: site.currency.clone(),
        statuses: STATUSES.iter().map(|(value, label)| (*value, *label, form.status.text() == *value)).collect(),
        categories: category_choices(&tree, &form.categories),
        columns: form.options.iter().take(columns).enumerate().map(|(i, o)| if o.name.text().is_empty() { format!("Option {}", i + 1) } else { o.name.text().to_owned() }).collect(),
        pictures: product["media"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((crate::console::thumb(m, 96)?, m["alt"].as_str().unwrap_or_default().to_owned())))
            .collect(),
        errors: form.errors(),
        form,
        message,
        done,
        counts_stock: staff.may(Permission::InventoryWrite),
    };
    let mut response = no_store((status, render(&page)).into_response());
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// A product's page in the console: everything about it in one form.
pub async fn product(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri, Path(id): Path<String>, Query(q): Query<DoneQuery>) -> Result<Response, PageError> {
    let staff = match catalog_staff(&site, &headers, Some(&uri)).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let done = match q.done.as_str() {
        "saved" => "The product is saved.",
        _ => "",
    };
    let product = site.staff_get(&staff, &format!("/api/v1/admin/products/{}", encode(&id))).await?;
    let form = ProductForm::of(&site, &product);
    product_page(&site, &headers, &staff, &product, form, StatusCode::OK, String::new(), done).await
}

/// A refusal of one of a save's calls, in words: what was not done, and why.
fn not_done(status: StatusCode, answer: &Value, what: &str) -> Result<(StatusCode, String), PageError> {
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    let (status, why) = crate::console::refusal(status, answer);
    Ok((status, format!("{what}: {why}")))
}

/// Makes a save's calls in their order; the first refused stops the rest.
async fn carry_out(site: &Site, staff: &Staff, id: &str, plan: Plan) -> Result<Result<(), (StatusCode, String)>, PageError> {
    let headers = staff.headers();
    let product_path = format!("/api/v1/admin/products/{}", encode(id));
    for sku in &plan.removed {
        let (status, answer) = site.api.send_as(Method::DELETE, &format!("/api/v1/admin/variants/{}", encode(sku)), &headers, None).await?;
        if !status.is_success() {
            return Ok(Err(not_done(status, &answer, &format!("{sku} was not removed"))?));
        }
    }
    let mut body = plan.product;
    if let Some(options) = plan.interim.clone().or_else(|| plan.options.clone()) {
        body.insert("options".into(), options);
    }
    let (status, answer) = site.api.send_as(Method::PATCH, &product_path, &headers, Some(Value::Object(body))).await?;
    if !status.is_success() {
        return Ok(Err(not_done(status, &answer, "The product was not saved")?));
    }
    for (sku, patch) in plan.variants {
        let (status, answer) = site.api.send_as(Method::PATCH, &format!("/api/v1/admin/variants/{}", encode(&sku)), &headers, Some(patch)).await?;
        if !status.is_success() {
            return Ok(Err(not_done(status, &answer, &format!("The product is saved, but not {sku}"))?));
        }
    }
    if let Some((variant, stock)) = plan.new {
        let sku = variant["sku"].as_str().unwrap_or_default().to_owned();
        let (status, answer) = site.api.send_as(Method::POST, &format!("{product_path}/variants"), &headers, Some(variant)).await?;
        if !status.is_success() {
            return Ok(Err(not_done(status, &answer, &format!("The product is saved, but {sku} was not added"))?));
        }
        if let Some(on_hand) = stock.filter(|_| staff.may(Permission::InventoryWrite)) {
            let (status, answer) = site.api.send_as(Method::PUT, &format!("/api/v1/admin/inventory/{}", encode(&sku)), &headers, Some(json!({"on_hand": on_hand}))).await?;
            if !status.is_success() {
                return Ok(Err(not_done(status, &answer, &format!("{sku} was added, but not its stock"))?));
            }
        }
    }
    if plan.interim.is_some()
        && let Some(options) = plan.options
    {
        let (status, answer) = site.api.send_as(Method::PATCH, &product_path, &headers, Some(json!({"options": options}))).await?;
        if !status.is_success() {
            return Ok(Err(not_done(status, &answer, "The product is saved, but not its options")?));
        }
    }
    Ok(Ok(()))
}

/// Saves a product's form (every change it makes, in order), or deletes the product.
pub async fn save_product(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Form(posted): Form<Vec<(String, String)>>) -> Result<Response, PageError> {
    let value = |k: &str| posted.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default();
    if !session::csrf_ok(&headers, value("csrf")) {
        return Err(PageError::expired_form());
    }
    let staff = match catalog_staff(&site, &headers, None).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let path = format!("/api/v1/admin/products/{}", encode(&id));
    match value("action") {
        "save" | "update" => {}
        "delete" => {
            let (status, answer) = site.api.send_as(Method::DELETE, &path, &staff.headers(), None).await?;
            if status.is_success() {
                return Ok(Redirect::to("/admin/products?done=delete").into_response());
            }
            let (status, message) = not_done(status, &answer, "The product was not deleted")?;
            let product = site.staff_get(&staff, &path).await?;
            let form = ProductForm::of(&site, &product);
            return product_page(&site, &headers, &staff, &product, form, status, message, "").await;
        }
        _ => return Err(PageError::unknown_action()),
    }
    let product = site.staff_get(&staff, &path).await?;
    let tree = site.staff_get(&staff, "/api/v1/categories").await?;
    let mut form = ProductForm::of(&site, &product).posted(&posted);
    let Some(plan) = plan(&site, shop_currency(&site)?, &product, &mut form, &category_choices(&tree, &[])) else {
        return product_page(&site, &headers, &staff, &product, form, StatusCode::UNPROCESSABLE_ENTITY, String::new(), "").await;
    };
    match carry_out(&site, &staff, &id, plan).await? {
        Ok(()) => Ok(Redirect::to(&format!("/admin/products/{}?done=saved", encode(&id))).into_response()),
        Err((status, message)) => {
            // Some of it may be saved: the form is drawn over the product as it is now.
            let product = site.staff_get(&staff, &path).await?;
            let form = ProductForm::of(&site, &product).posted(&posted);
            product_page(&site, &headers, &staff, &product, form, status, message, "").await
        }
    }
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
    nav: Nav,
    csrf: String,
    /// The product's console page, and where the forms post.
    base: String,
    title: String,
    pictures: Vec<PictureView>,
    message: String,
    done: &'static str,
}

/// The staff member allowed to change the catalog, or the answer for anyone
/// else (for a page `asked` for by its address, the way to sign in first).
async fn catalog_staff(site: &Site, headers: &HeaderMap, asked: Option<&axum::http::Uri>) -> Result<Result<Staff, Response>, PageError> {
    let gate = match asked {
        Some(uri) => staff_asking(site, headers, uri).await?,
        None => staff(site, headers).await?,
    };
    match gate {
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
        nav: staff.nav("/admin/products"),
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

pub async fn pictures(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri, Path(id): Path<String>, Query(q): Query<DoneQuery>) -> Result<Response, PageError> {
    let staff = match catalog_staff(&site, &headers, Some(&uri)).await? {
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
    let message = if q.done == "refused" { "The product is made, but its picture was not taken (a JPEG, PNG or WebP file is needed): please upload it here." } else { "" };
    pictures_page(&site, &headers, &staff, &id, StatusCode::OK, message.to_owned(), done).await
}

/// Uploads a picture (with its description) to a product.
pub async fn add_picture(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, mut form: axum::extract::Multipart) -> Result<Response, PageError> {
    let staff = match catalog_staff(&site, &headers, None).await? {
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
    let staff = match catalog_staff(&site, &headers, None).await? {
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
    nav: Nav,
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

pub async fn import_form(State(site): State<Site>, headers: HeaderMap, uri: axum::http::Uri) -> Result<Response, PageError> {
    let staff = match staff_asking(&site, &headers, &uri).await? {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(r),
    };
    if !staff.may(Permission::CatalogWrite) {
        return Err(forbidden());
    }
    let (csrf, set) = session::csrf(&headers, site.secure());
    let page = ImportPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav("/admin/products"), csrf, currency: site.currency.clone(), message: String::new(), totals: None, errors: Vec::new() };
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
    let mut page = ImportPage { shop: &site.name, staff: staff.name.clone(), nav: staff.nav("/admin/products"), csrf, currency: currency.clone(), message: String::new(), totals: None, errors: Vec::new() };
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
        assert!(svg.contains(r#"height="160""#) && svg.contains("<title>2026-11-25: $50.00</title>"));
        assert_eq!(last_days(30).len(), 30);
    }

    #[test]
    fn only_this_shop_s_console_is_led_to_after_signing_in() {
        for good in ["/admin", "/admin/orders?status=paid", "/admin/products/prd_1"] {
            assert_eq!(console_path(good), Some(good));
        }
        for bad in ["/account", "//evil.example/admin", "/admin//evil.example", "/admin\\x", "/administrator", "/admin/a b", "https://evil.example/admin"] {
            assert_eq!(console_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_shipping_paid_for_is_named_with_its_price_and_time() {
        let (name, price, days) = shipping_of(&json!({"id": "shp_1", "name": "Express", "amount": 1995, "min_days": 1, "max_days": 2}), "USD").unwrap();
        assert_eq!((name.as_str(), days.as_str()), ("Express", "1–2 days"));
        assert!(price.contains("19.95"), "{price}");
        let (_, price, days) = shipping_of(&json!({"name": "Pickup", "amount": 0, "min_days": 1, "max_days": 1}), "USD").unwrap();
        assert_eq!((price.as_str(), days.as_str()), ("Free", "1 day"));
        assert!(shipping_of(&Value::Null, "USD").is_none());
    }

    fn site() -> Site {
        Site::new(crate::Api::default(), &kernel::config::Config::default())
    }

    fn cap() -> Value {
        json!({"id": "prd_1", "title": "Cap", "status": "active", "options": [{"name": "Size", "values": ["S", "M"]}], "categories": [],
            "variants": [
                {"sku": "CAP-S", "title": "S", "option_values": ["S"], "prices": {"USD": {"amount": 6899, "currency": "USD"}, "EUR": {"amount": 6500, "currency": "EUR"}}},
                {"sku": "CAP-M", "title": "M", "option_values": ["M"], "prices": {"USD": {"amount": 7199, "currency": "USD"}}, "weight_grams": 130}]})
    }

    fn posted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn planned(product: &Value, pairs: &[(&str, &str)]) -> Result<Plan, Vec<(String, String)>> {
        let site = site();
        let mut form = ProductForm::of(&site, product).posted(&posted(pairs));
        let Ok(currency) = shop_currency(&site) else { panic!("the shop has a currency") };
        plan(&site, currency, product, &mut form, &[]).ok_or_else(|| form.errors())
    }

    #[test]
    fn a_saved_form_sends_only_what_changed_and_keeps_other_currencies() {
        let plan = planned(&cap(), &[("title", "Cap"), ("variant1.sku", "CAP-S"), ("variant1.price", "59.50"), ("variant2.sku", "CAP-M"), ("variant2.price", "71.99"), ("variant2.weight", "130")]).unwrap();
        assert_eq!(plan.variants, vec![("CAP-S".to_owned(), json!({"prices": {"USD": 5950, "EUR": 6500}, "compare_at_prices": {}}))]);
        assert_eq!((plan.options, plan.interim, plan.new), (None, None, None));
        assert_eq!(plan.product["title"], "Cap");
    }

    #[test]
    fn a_value_renamed_is_offered_alongside_the_old_one_while_the_variant_moves() {
        let plan = planned(&cap(), &[("option1.name", "Size"), ("option1.values", "S, Medium"), ("variant2.sku", "CAP-M"), ("variant2.value1", "medium")]).unwrap();
        assert_eq!(plan.interim, Some(json!([{"name": "Size", "values": ["S", "Medium", "M"]}])));
        assert_eq!(plan.options, Some(json!([{"name": "Size", "values": ["S", "Medium"]}])));
        assert_eq!(plan.variants, vec![("CAP-M".to_owned(), json!({"option_values": ["Medium"], "title": "Medium"}))], "spelled as the option spells it");
    }

    #[test]
    fn mistakes_are_named_at_their_fields() {
        let errors = planned(&cap(), &[("title", " "), ("variant1.sku", "CAP-S"), ("variant1.price", "1,5"), ("new.price", "3"), ("option2.name", "Colour"), ("option2.values", "Red")]).unwrap_err();
        let ids: Vec<&str> = errors.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["f-title", "f-option2-name", "f-variant1-price", "f-new-sku"], "{errors:?}");
        let errors = planned(&cap(), &[("new.sku", "CAP-S"), ("new.value1", "S"), ("new.price", "1")]).unwrap_err();
        assert!(errors.iter().any(|(id, e)| id == "f-new-sku" && e == "CAP-S is already a variant of this product."), "{errors:?}");
    }

    #[test]
    fn a_list_shows_a_picture_s_smallest_sharp_copy_sized() {
        let media = json!({"url": "/media/a.png", "width": 800, "height": 600, "thumbnails": [{"width": 80, "url": "/media/a-80.jpg"}, {"width": 160, "url": "/media/a-160.jpg"}, {"width": 480, "url": "/media/a-480.jpg"}]});
        let t = crate::console::thumb(&media, 56).unwrap();
        assert_eq!((t.url.as_str(), t.width, t.height), ("/media/a-160.jpg", 56, 42));
        assert!(crate::console::thumb(&json!({"url": ""}), 56).is_none());
    }
}
