//! The console's record-keeping sections (discounts, shipping, taxes,
//! customers, staff, notifications, ...), each declared as data in
//! [`crate::sections`]: the staff API list it shows, its columns, and the
//! forms that call the staff API. One set of handlers serves them all, so
//! every section pages, checks permissions, escapes and reports errors the
//! same way, and a form can only ever call the API route its section names.

use std::collections::HashMap;

use askama::Template;
use crate::form::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use kernel::auth::Permission;
use serde_json::{Map, Value, json};

use crate::Site;
use crate::admin::{Gate, Staff, forbidden, no_store, staff};
use crate::api::encode;
use crate::pages::{PageError, money, render};
use crate::session;

/// A console section: one kind of record the staff API keeps.
pub struct Section {
    /// The group of the console's menu it is listed in.
    pub menu: Menu,
    /// Where it lives in the console (`/admin/discounts`).
    pub path: &'static str,
    pub title: &'static str,
    /// One or two sentences under the heading.
    pub intro: &'static str,
    /// Who may open it.
    pub read: Permission,
    /// The API list shown: a page (`data`), a bare array, or one object.
    pub list: &'static str,
    /// Links on the list page to pages of their own: (path, label).
    pub links: &'static [(&'static str, &'static str)],
    /// Links on a record's page (`{id}` stands for its key): (path, label).
    pub record_links: &'static [(&'static str, &'static str)],
    /// Query parameters offered as filters and passed on to the list.
    pub filters: &'static [Field],
    pub columns: &'static [Column],
    /// How nested rows are spread out, if they are.
    pub explode: Explode,
    /// Where one record comes from, if records open.
    pub record: Record,
    /// The JSON key holding a row's id.
    pub key: &'static str,
    /// Forms on the list page (create, replace).
    pub create: &'static [Action],
    /// Buttons on each row of the list (retry, delete).
    pub row: &'static [Action],
    /// Forms on a record's page (update, delete, send a test).
    pub actions: &'static [Action],
    /// A record's `html` is a message to show rendered (a mailbox), not source to read.
    pub rendered: bool,
    /// Lists shown under a record (a customer's orders, a SKU's history).
    pub related: &'static [Related],
}

/// The groups of the console's menu, in its order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Menu {
    Sales,
    Catalog,
    Customers,
    Marketing,
    Settings,
}

impl Menu {
    pub const ALL: [Menu; 5] = [Menu::Sales, Menu::Catalog, Menu::Customers, Menu::Marketing, Menu::Settings];

    pub fn heading(self) -> &'static str {
        match self {
            Menu::Sales => "Sales",
            Menu::Catalog => "Catalog",
            Menu::Customers => "Customers",
            Menu::Marketing => "Marketing",
            Menu::Settings => "Settings",
        }
    }

    /// Its name in element ids.
    pub fn id(self) -> &'static str {
        match self {
            Menu::Sales => "sales",
            Menu::Catalog => "catalog",
            Menu::Customers => "customers",
            Menu::Marketing => "marketing",
            Menu::Settings => "settings",
        }
    }
}

/// How a list's nested rows become rows of their own.
#[derive(Clone, Copy)]
pub enum Explode {
    No,
    /// The items of this array in each listed object (a product's
    /// variants), each with the object's `title` as `parent`.
    Items(&'static str),
    /// Each listed object, then its descendants under this key (a category tree).
    Tree(&'static str),
}

/// Where a section's record comes from.
#[derive(Clone, Copy)]
pub enum Record {
    /// Records do not open.
    None,
    /// This API path (`{id}` stands for the key).
    Api(&'static str),
    /// The row of the section's list with this key (the API has no route for one).
    InList,
    /// The record is its key alone; its page shows the related lists and forms.
    Key,
    /// Records open in a page of their own: the product editor (`admin::product`).
    Editor,
}

/// A column of a list.
pub struct Column {
    pub heading: &'static str,
    /// A JSON pointer into the row (`/total/amount`).
    pub pointer: &'static str,
    pub show: Show,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Text,
    /// Minor units (an integer in the shop's currency) or `{amount, currency}`.
    Money,
    /// An RFC 3339 time, shown to the minute.
    When,
    /// Yes or no.
    Flag,
    /// The row's link to its record.
    Link,
    /// The first of a list of pictures (a product's `media`), as a thumbnail.
    Picture,
    /// The lowest to the highest price, in the shop's currency, of a list of variants.
    PriceRange,
    /// The units available over a list of variants (those whose stock is counted).
    Stock,
}

/// A list under a record.
pub struct Related {
    pub title: &'static str,
    /// The API path (`{id}` stands for the record's key).
    pub path: &'static str,
    pub columns: &'static [Column],
    /// The rows: a JSON pointer to an array in the answer, or `""` for a page's `data` or a bare array.
    pub rows: &'static str,
    /// Where a row links to (`{id}` stands for the row's `key`), if anywhere.
    pub link: Option<(&'static str, &'static str)>,
}

/// A form (or a lone button) that calls one staff API route.
pub struct Action {
    pub key: &'static str,
    pub label: &'static str,
    pub method: Method,
    /// The API path (`{id}` stands for the record's key).
    pub path: &'static str,
    pub fields: &'static [Field],
    pub permission: Permission,
    /// Destructive: drawn as such.
    pub danger: bool,
    /// Its fields start with the record's values (an edit), or empty (an addition).
    pub fill: bool,
    pub after: After,
}

/// Where a successful action leads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Back to the page the form was on.
    Stay,
    /// To the section's list (after a delete).
    List,
    /// To the record the answer describes (after a create).
    Record,
    /// The same page with the API's answer shown (a preview, a test send, a new key's secret).
    Show,
}

/// A form field, and how its text becomes JSON.
pub struct Field {
    /// The JSON key; dots nest (`value.amount`).
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub hint: &'static str,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Text,
    Url,
    /// Several lines of text.
    Long,
    Int,
    /// A decimal amount in the shop's currency, sent as minor units.
    Money,
    /// A checkbox.
    Bool,
    /// One of these.
    Choice(&'static [&'static str]),
    /// Any of these (checkboxes), sent as an array.
    Multi(&'static [&'static str]),
    /// Comma-separated, sent as an array of strings.
    List,
    /// One group per line, each comma-separated: an array of arrays.
    Groups,
    /// A date and time (the browser's `datetime-local`, taken as UTC).
    When,
    /// JSON as typed.
    Json,
    /// Not asked: the record's key.
    Id,
    /// Not asked: always this JSON.
    Const(&'static str),
}

pub const fn field(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field { name, label, kind, required: false, hint: "" }
}

pub const fn required(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field { name, label, kind, required: true, hint: "" }
}

pub const fn hinted(name: &'static str, label: &'static str, kind: Kind, hint: &'static str) -> Field {
    Field { name, label, kind, required: false, hint }
}

pub const fn column(heading: &'static str, pointer: &'static str, show: Show) -> Column {
    Column { heading, pointer, show }
}

// Turning values into text and text into JSON

fn currency_of(site: &Site) -> Option<kernel::money::Currency> {
    kernel::money::Currency::parse(&site.currency).ok()
}

/// A JSON value as a cell shows it.
fn shown(site: &Site, value: &Value, show: Show) -> String {
    match (show, value) {
        (_, Value::Null) => String::new(),
        (Show::Money, Value::Number(n)) => money(n.as_i64().unwrap_or_default(), &site.currency),
        (Show::Money, Value::Object(o)) => match (o.get("amount").and_then(Value::as_i64), o.get("currency").and_then(Value::as_str)) {
            (Some(a), Some(c)) => money(a, c),
            _ => plain(value),
        },
        (Show::When, Value::String(s)) => when(s),
        (Show::Flag, Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        (Show::Picture, _) => String::new(),
        (Show::PriceRange, Value::Array(variants)) => price_range(site, variants),
        (Show::Stock, Value::Array(variants)) => stock_of(variants),
        _ => plain(value),
    }
}

/// A variant's price in the shop's currency, in minor units.
fn price_in(site: &Site, variant: &Value) -> Option<i64> {
    let price = variant.get("prices")?.get(&site.currency)?;
    price.get("amount").and_then(Value::as_i64).or_else(|| price.as_i64())
}

/// What variants cost: one price, or the lowest to the highest.
fn price_range(site: &Site, variants: &[Value]) -> String {
    let prices: Vec<i64> = variants.iter().filter_map(|v| price_in(site, v)).collect();
    match (prices.iter().min(), prices.iter().max()) {
        (Some(low), Some(high)) if low == high => money(*low, &site.currency),
        (Some(low), Some(high)) => format!("{} – {}", money(*low, &site.currency), money(*high, &site.currency)),
        _ => format!("No price in {}", site.currency),
    }
}

/// How many units of some variants can be sold, in words.
fn stock_of(variants: &[Value]) -> String {
    let counted: Vec<i64> = variants.iter().filter(|v| v["track_inventory"] != false).filter_map(|v| v["available"].as_i64()).collect();
    if counted.is_empty() {
        return "Not counted".to_owned();
    }
    match counted.iter().map(|n| (*n).max(0)).sum::<i64>() {
        0 => "Sold out".to_owned(),
        n => format!("{n} available"),
    }
}

/// A picture shown small in a list: its smallest copy wide enough for
/// sharp screens, sized so that the page does not move as it loads.
pub struct Thumb {
    pub url: String,
    pub width: i64,
    pub height: i64,
}

/// The width thumbnails are drawn at in lists, in CSS pixels.
const THUMB: i64 = 56;

/// The thumbnail of a picture of the catalog (`MediaView`), or `None` without one.
pub fn thumb(media: &Value, width: i64) -> Option<Thumb> {
    let original = media.get("url").and_then(Value::as_str).filter(|u| !u.is_empty())?;
    let copies = media.get("thumbnails").and_then(Value::as_array).cloned().unwrap_or_default();
    let wide_enough = copies.iter().find(|t| t["width"].as_i64().unwrap_or(0) >= width * 2).or(copies.last());
    let url = wide_enough.and_then(|t| t["url"].as_str()).unwrap_or(original).to_owned();
    let height = match (media["width"].as_i64(), media["height"].as_i64()) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (width * h + w / 2) / w,
        _ => width,
    };
    Some(Thumb { url, width, height: height.clamp(1, width * 4) })
}

fn when(rfc3339: &str) -> String {
    rfc3339.replacen('T', " ", 1).chars().take(16).collect()
}

/// Any JSON value as one line of text.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(o) if o.len() == 2 && o.contains_key("amount") && o.contains_key("currency") => {
            money(o["amount"].as_i64().unwrap_or_default(), o["currency"].as_str().unwrap_or_default())
        }
        other => other.to_string(),
    }
}

/// A value as a form field shows it, to be edited.
fn editable(site: &Site, value: &Value, kind: Kind) -> String {
    match (kind, value) {
        (_, Value::Null) => String::new(),
        (Kind::Money, Value::Number(n)) => currency_of(site).map(|c| c.format_decimal(n.as_i64().unwrap_or_default())).unwrap_or_else(|| n.to_string()),
        (Kind::Money, Value::Object(o)) => match (currency_of(site), o.get("amount").and_then(Value::as_i64)) {
            (Some(c), Some(a)) => c.format_decimal(a),
            _ => String::new(),
        },
        (Kind::When, Value::String(s)) => s.chars().take(16).collect(),
        (Kind::Groups, Value::Array(groups)) => groups.iter().map(plain).collect::<Vec<_>>().join("\n"),
        (Kind::Json, v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        (_, v) => plain(v),
    }
}

/// Why a form's field could not be read.
struct Bad {
    field: &'static str,
    reason: String,
}

/// One posted field as JSON; `None` when left empty.
fn parse(site: &Site, f: &Field, posted: &[&str], id: &str) -> Result<Option<Value>, Bad> {
    let text = posted.first().map(|t| t.trim()).unwrap_or_default();
    let bad = |reason: &str| Bad { field: f.label, reason: reason.to_owned() };
    match f.kind {
        Kind::Id => return Ok(Some(Value::String(id.to_owned()))),
        Kind::Const(json) => return serde_json::from_str(json).map(Some).map_err(|_| bad("is set wrongly in the console")),
        _ => {}
    }
    if let Kind::Bool = f.kind {
        return Ok(Some(Value::Bool(!text.is_empty())));
    }
    if let Kind::Multi(options) = f.kind {
        let chosen: Vec<&str> = posted.iter().copied().filter(|p| options.contains(p)).collect();
        return Ok(Some(json!(chosen)));
    }
    if text.is_empty() {
        return if f.required { Err(bad("is required")) } else { Ok(None) };
    }
    let value = match f.kind {
        Kind::Text | Kind::Url | Kind::Long => Value::String(text.to_owned()),
        Kind::Int => Value::from(text.parse::<i64>().map_err(|_| bad("must be a whole number"))?),
        Kind::Money => {
            let currency = currency_of(site).ok_or_else(|| bad("has no currency to be read in"))?;
            Value::from(currency.parse_decimal(text).map_err(|_| bad("must be an amount, e.g. 19.99"))?)
        }
        Kind::Choice(options) => {
            if !options.contains(&text) {
                return Err(bad("is not one of the choices"));
            }
            Value::String(text.to_owned())
        }
        Kind::List => json!(text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>()),
        Kind::Groups => json!(
            text.lines()
                .map(|l| l.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>())
                .filter(|g| !g.is_empty())
                .collect::<Vec<_>>()
        ),
        Kind::When => {
            let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
            let at = time::PrimitiveDateTime::parse(text.get(..16).unwrap_or(text), &format).map_err(|_| bad("must be a date and time"))?;
            Value::String(at.assume_utc().format(&time::format_description::well_known::Rfc3339).map_err(|_| bad("must be a date and time"))?)
        }
        Kind::Json => serde_json::from_str(text).map_err(|e| bad(&format!("is not JSON: {e}")))?,
        Kind::Bool | Kind::Multi(_) | Kind::Id | Kind::Const(_) => Value::Null,
    };
    Ok(Some(value))
}

/// Sets `value` at a dotted `name` in `body`.
fn put(body: &mut Map<String, Value>, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            body.insert(name.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = body.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(map) = inner {
                put(map, rest, value);
            }
        }
    }
}

/// The value at a dotted `name` in `record`.
fn get<'a>(record: &'a Value, name: &str) -> &'a Value {
    name.split('.').fold(record, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// A posted form as the API path and JSON body its action sends.
fn request_of(site: &Site, action: &Action, posted: &[(String, String)], id: &str) -> Result<(String, Value), Bad> {
    let mut body = Map::new();
    let path = with_id(action.path, id);
    for f in action.fields {
        let values: Vec<&str> = posted.iter().filter(|(k, _)| k == f.name).map(|(_, v)| v.as_str()).collect();
        match (f.kind, parse(site, f, &values, id)?) {
            (_, Some(v)) => put(&mut body, f.name, v),
            // An edit form sent back with a field emptied clears it (a PATCH
            // leaves out what it does not change); a field not on the form stays.
            (kind, None) if action.method == Method::PATCH && action.fill && !values.is_empty() => {
                let cleared = match kind {
                    Kind::List => json!([]),
                    Kind::Long => json!(""),
                    _ => Value::Null,
                };
                put(&mut body, f.name, cleared)
            }
            (_, None) => {}
        }
    }
    Ok((path, Value::Object(body)))
}

fn with_id(path: &str, id: &str) -> String {
    path.replace("{id}", &encode(id))
}

fn asked(f: &Field) -> bool {
    !matches!(f.kind, Kind::Id | Kind::Const(_))
}

// What the templates draw

pub struct FieldView {
    pub id: String,
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `email`, `url`, `number`, `datetime-local`, `checkbox`, `textarea`, `select`, `multi`.
    pub input: &'static str,
    pub value: String,
    pub checked: bool,
    pub options: Vec<(String, bool)>,
    pub required: bool,
    pub hint: &'static str,
    pub step: &'static str,
}

pub struct FormView {
    pub key: &'static str,
    pub label: &'static str,
    pub target: String,
    pub danger: bool,
    pub fields: Vec<FieldView>,
}

fn field_view(site: &Site, form: &str, f: &Field, value: &Value, posted: Option<&[(String, String)]>) -> FieldView {
    let posted_values: Option<Vec<&str>> = posted.map(|p| p.iter().filter(|(k, _)| k == f.name).map(|(_, v)| v.as_str()).collect());
    let text = match &posted_values {
        Some(v) => v.first().map(|s| (*s).to_owned()).unwrap_or_default(),
        None => editable(site, value, f.kind),
    };
    let (input, step) = match f.kind {
        Kind::Text | Kind::List | Kind::Id | Kind::Const(_) => ("text", ""),
        Kind::Url => ("url", ""),
        Kind::Long | Kind::Groups | Kind::Json => ("textarea", ""),
        Kind::Int => ("number", "1"),
        Kind::Money => ("text", ""),
        Kind::Bool => ("checkbox", ""),
        Kind::Choice(_) => ("select", ""),
        Kind::Multi(_) => ("multi", ""),
        Kind::When => ("datetime-local", ""),
    };
    let options = match f.kind {
        Kind::Choice(opts) => opts.iter().map(|o| ((*o).to_owned(), text == *o)).collect(),
        Kind::Multi(opts) => {
            let chosen: Vec<String> = match &posted_values {
                Some(v) => v.iter().map(|s| (*s).to_owned()).collect(),
                None => value.as_array().map(|a| a.iter().map(plain).collect()).unwrap_or_default(),
            };
            opts.iter().map(|o| ((*o).to_owned(), chosen.iter().any(|c| c == o))).collect()
        }
        _ => Vec::new(),
    };
    let checked = match &posted_values {
        Some(v) => !v.is_empty(),
        None => value.as_bool().unwrap_or(false),
    };
    FieldView {
        id: format!("{form}-{}", f.name.replace('.', "-")),
        name: f.name,
        label: f.label,
        input,
        value: text,
        checked,
        options,
        required: f.required,
        hint: f.hint,
        step,
    }
}

fn form_view(site: &Site, action: &Action, target: String, record: &Value, posted: Option<(&str, &[(String, String)])>) -> FormView {
    let mine = posted.filter(|(k, _)| *k == action.key).map(|(_, p)| p);
    let record = if action.fill { record } else { &Value::Null };
    FormView {
        key: action.key,
        label: action.label,
        danger: action.danger,
        fields: action.fields.iter().filter(|f| asked(f)).map(|f| field_view(site, action.key, f, get(record, f.name), mine)).collect(),
        target,
    }
}

pub struct Cell {
    pub text: String,
    pub link: Option<String>,
    pub picture: Option<Thumb>,
    /// Its column's heading, named beside the value where rows are stacked (a phone).
    pub heading: &'static str,
    /// What it holds (`picture`, `link`, `value`), for the stacked layout.
    pub role: &'static str,
}

pub struct RowView {
    pub cells: Vec<Cell>,
    pub buttons: Vec<FormView>,
}

fn rows_of(body: &Value, at: &str) -> Vec<Value> {
    if !at.is_empty() {
        return body.pointer(at).and_then(Value::as_array).cloned().unwrap_or_default();
    }
    match body {
        Value::Array(items) => items.clone(),
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn row_view(site: &Site, row: &Value, columns: &[Column], link: Option<String>) -> Vec<Cell> {
    columns
        .iter()
        .map(|c| {
            let value = row.pointer(c.pointer).unwrap_or(&Value::Null);
            let text = match (c.show, value) {
                // An amount in minor units is in the row's own currency where it names one.
                (Show::Money, Value::Number(n)) => money(n.as_i64().unwrap_or_default(), row["currency"].as_str().unwrap_or(&site.currency)),
                _ => shown(site, value, c.show),
            };
            let link = if c.show == Show::Link { link.clone() } else { None };
            let picture = if c.show == Show::Picture { value.as_array().and_then(|m| m.first()).and_then(|m| thumb(m, THUMB)) } else { None };
            let role = match c.show {
                Show::Picture => "picture",
                Show::Link => "link",
                _ => "value",
            };
            Cell { text, link, picture, heading: c.heading, role }
        })
        .collect()
}

/// A record's fields, each as (name, text, is long, is HTML).
pub struct Detail {
    pub name: String,
    pub text: String,
    pub long: bool,
    pub html: bool,
}

/// The top-level keys a section's forms send as amounts of money.
fn money_keys(section: &Section) -> Vec<&'static str> {
    section.create.iter().chain(section.actions).flat_map(|a| a.fields).filter(|f| matches!(f.kind, Kind::Money) && !f.name.contains('.')).map(|f| f.name).collect()
}

/// A record's fields as its page shows them; the `money` keys hold minor
/// units in the record's currency (or the shop's), shown as prices.
fn details(site: &Site, record: &Value, rendered: bool, money_keys: &[&str]) -> Vec<Detail> {
    let Value::Object(fields) = record else { return Vec::new() };
    let currency = record["currency"].as_str().filter(|c| kernel::money::Currency::parse(c).is_ok()).unwrap_or(&site.currency);
    fields
        .iter()
        .map(|(k, v)| {
            let html = rendered && (k == "html" || k.ends_with("_html"));
            let text = match v {
                Value::Number(n) if money_keys.contains(&k.as_str()) => money(n.as_i64().unwrap_or_default(), currency),
                Value::String(s) if html => s.clone(),
                Value::String(s) if s.len() == 20 && s.ends_with('Z') && s.as_bytes().get(10) == Some(&b'T') => when(s),
                Value::Object(_) | Value::Array(_) if plain(v).starts_with(['{', '[']) => serde_json::to_string_pretty(v).unwrap_or_default(),
                _ => shown(site, v, Show::Text),
            };
            let long = !html && (text.contains('\n') || text.len() > 120);
            Detail { name: k.replace('_', " "), text, long, html }
        })
        .collect()
}

// Pages

#[derive(Template)]
#[template(path = "admin/section.html")]
struct ListPage<'a> {
    shop: &'a str,
    staff: String,
    nav: crate::admin::Nav,
    csrf: String,
    title: &'static str,
    intro: &'static str,
    links: &'static [(&'static str, &'static str)],
    base: String,
    filters: Vec<FieldView>,
    headings: Vec<&'static str>,
    rows: Vec<RowView>,
    single: Vec<Detail>,
    next: Option<String>,
    forms: Vec<FormView>,
    message: String,
    done: String,
    answer: Vec<Detail>,
}

#[derive(Template)]
#[template(path = "admin/record.html")]
struct RecordPage<'a> {
    shop: &'a str,
    staff: String,
    nav: crate::admin::Nav,
    csrf: String,
    section: &'static str,
    base: String,
    links: Vec<(String, &'static str)>,
    title: String,
    details: Vec<Detail>,
    related: Vec<RelatedView>,
    forms: Vec<FormView>,
    message: String,
    done: String,
    answer: Vec<Detail>,
}

/// A list from another part of the shop drawn under a record.
struct RelatedView {
    heading: &'static str,
    headings: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

/// What a page says about the last thing done on it.
#[derive(Default)]
struct Outcome<'a> {
    /// Why the last form failed.
    message: String,
    /// The label of the action that just succeeded.
    done: String,
    /// The API's answer to show.
    answer: Option<Value>,
    /// The form posted, to draw again with what was typed.
    posted: Option<(&'a str, &'a [(String, String)])>,
}

fn csrf_of(site: &Site, headers: &HeaderMap) -> (String, Option<header::HeaderValue>) {
    session::csrf(headers, site.secure())
}

fn finish(status: StatusCode, page: &impl Template, set: Option<header::HeaderValue>) -> Response {
    let mut response = no_store((status, render(page)).into_response());
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn done_label(section: &Section, key: Option<&str>) -> String {
    key.and_then(|k| section.create.iter().chain(section.row).chain(section.actions).find(|a| a.key == k))
        .map(|a| a.label.to_owned())
        .unwrap_or_default()
}

async fn list_page(site: &Site, headers: &HeaderMap, staff: &Staff, section: &'static Section, query: &HashMap<String, String>, status: StatusCode, outcome: Outcome<'_>) -> Result<Response, PageError> {
    let mut path = section.list.to_owned();
    let mut own = Vec::new();
    for f in section.filters {
        if let Some(v) = query.get(f.name).filter(|v| !v.trim().is_empty()) {
            own.push(format!("{}={}", f.name, encode(v.trim())));
        }
    }
    let mut params = own.clone();
    if let Some(after) = query.get("after").filter(|a| !a.is_empty()) {
        params.push(format!("starting_after={}", encode(after)));
    }
    if !params.is_empty() {
        path += if path.contains('?') { "&" } else { "?" };
        path += &params.join("&");
    }
    let body = site.staff_get(staff, &path).await?;
    let base = section.path.to_owned();
    let (csrf, set) = csrf_of(site, headers);
    let rows = listed(section, &body)
        .iter()
        .map(|row| {
            let id = plain(row.get(section.key).unwrap_or(&Value::Null));
            let link = (!matches!(section.record, Record::None)).then(|| format!("{base}/{}", encode(&id)));
            let buttons = section.row.iter().filter(|a| staff.may(a.permission)).map(|a| form_view(site, a, format!("{base}/{}", encode(&id)), row, None)).collect();
            RowView { cells: row_view(site, row, section.columns, link), buttons }
        })
        .collect();
    let single = if body.is_object() && body.get("data").is_none() { details(site, &body, false, &money_keys(section)) } else { Vec::new() };
    let next = match (body["has_more"].as_bool(), body["next_cursor"].as_str()) {
        (Some(true), Some(c)) => {
            let mut q = own.clone();
            q.push(format!("after={}", encode(c)));
            Some(format!("{base}?{}", q.join("&")))
        }
        _ => None,
    };
    let filter_values = Value::Object(query.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    let page = ListPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav(section.path),
        csrf,
        title: section.title,
        intro: section.intro,
        links: section.links,
        filters: section.filters.iter().map(|f| field_view(site, "filter", f, get(&filter_values, f.name), None)).collect(),
        headings: section.columns.iter().map(|c| c.heading).collect(),
        rows,
        single,
        next,
        forms: section.create.iter().filter(|a| staff.may(a.permission)).map(|a| form_view(site, a, base.clone(), &body, outcome.posted)).collect(),
        base,
        message: outcome.message,
        done: outcome.done,
        answer: outcome.answer.map(|a| details(site, &a, true, &[])).unwrap_or_default(),
    };
    Ok(finish(status, &page, set))
}

/// The rows a section lists, its objects' arrays spread out where it says so.
fn listed(section: &Section, body: &Value) -> Vec<Value> {
    fn tree(rows: &[Value], under: &str, out: &mut Vec<Value>) {
        for row in rows {
            out.push(row.clone());
            if let Some(children) = row.get(under).and_then(Value::as_array) {
                tree(children, under, out);
            }
        }
    }
    let rows = rows_of(body, "");
    let inner = match section.explode {
        Explode::No => return rows,
        Explode::Items(inner) => inner,
        Explode::Tree(under) => {
            let mut out = Vec::new();
            tree(&rows, under, &mut out);
            return out;
        }
    };
    rows.iter()
        .flat_map(|parent| {
            let title = parent.get("title").cloned().unwrap_or(Value::Null);
            parent.get(inner).and_then(Value::as_array).cloned().unwrap_or_default().into_iter().map(move |mut item| {
                if let Value::Object(o) = &mut item {
                    o.insert("parent".into(), title.clone());
                }
                item
            })
        })
        .collect()
}

async fn record_page(site: &Site, headers: &HeaderMap, staff: &Staff, section: &'static Section, id: &str, status: StatusCode, outcome: Outcome<'_>) -> Result<Response, PageError> {
    let missing = || PageError(StatusCode::NOT_FOUND, "This page does not exist.".into());
    let record = match section.record {
        Record::None | Record::Editor => return Err(missing()),
        Record::Api(path) => site.staff_get(staff, &with_id(path, id)).await?,
        Record::InList => listed(section, &site.staff_get(staff, section.list).await?)
            .into_iter()
            .find(|row| row.get(section.key).map(plain).as_deref() == Some(id))
            .ok_or_else(missing)?,
        Record::Key => json!({ section.key: id }),
    };
    let base = format!("{}/{}", section.path, encode(id));
    let mut related = Vec::new();
    for r in section.related {
        // A list from another service may be elsewhere or down; the record still shows.
        let rows = match site.staff_get(staff, &with_id(r.path, id)).await {
            Ok(body) => rows_of(&body, r.rows),
            Err(e) => {
                tracing::warn!(error = %e, list = r.title, "a console page left out a related list");
                Vec::new()
            }
        };
        let cells = rows
            .iter()
            .map(|row| {
                let link = r.link.map(|(to, key)| to.replace("{id}", &encode(&plain(row.get(key).unwrap_or(&Value::Null)))));
                row_view(site, row, r.columns, link)
            })
            .collect();
        related.push(RelatedView { heading: r.title, headings: r.columns.iter().map(|c| c.heading).collect(), rows: cells });
    }
    let title = ["title", "name", "code", "email", "key", "sku", "url", "subject"]
        .iter()
        .find_map(|k| record.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or(id)
        .to_owned();
    let (csrf, set) = csrf_of(site, headers);
    let page = RecordPage {
        shop: &site.name,
        staff: staff.name.clone(),
        nav: staff.nav(section.path),
        csrf,
        section: section.title,
        title,
        details: details(site, &record, section.rendered, &money_keys(section)),
        links: section.record_links.iter().map(|(path, label)| (with_id(path, id), *label)).collect(),
        related,
        forms: section.actions.iter().filter(|a| staff.may(a.permission)).map(|a| form_view(site, a, base.clone(), &record, outcome.posted)).collect(),
        base: section.path.to_owned(),
        message: outcome.message,
        done: outcome.done,
        answer: outcome.answer.map(|a| details(site, &a, true, &[])).unwrap_or_default(),
    };
    Ok(finish(status, &page, set))
}

/// The staff member who may read `section`, or the answer for anyone else
/// (for a page `asked` for by its address, the way to sign in first).
async fn open(site: &Site, headers: &HeaderMap, section: &Section, asked: Option<&Uri>) -> Result<Result<Staff, Response>, PageError> {
    let gate = match asked {
        Some(uri) => crate::admin::staff_asking(site, headers, uri).await?,
        None => staff(site, headers).await?,
    };
    let staff = match gate {
        Gate::In(s) => s,
        Gate::Out(r) => return Ok(Err(r)),
    };
    if !staff.may(section.read) {
        return Err(forbidden());
    }
    Ok(Ok(staff))
}

pub async fn list(site: Site, headers: HeaderMap, uri: Uri, section: &'static Section, query: HashMap<String, String>) -> Result<Response, PageError> {
    let staff = match open(&site, &headers, section, Some(&uri)).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let done = done_label(section, query.get("done").map(String::as_str));
    list_page(&site, &headers, &staff, section, &query, StatusCode::OK, Outcome { done, ..Default::default() }).await
}

pub async fn record(site: Site, headers: HeaderMap, uri: Uri, section: &'static Section, id: String, query: HashMap<String, String>) -> Result<Response, PageError> {
    let staff = match open(&site, &headers, section, Some(&uri)).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let done = done_label(section, query.get("done").map(String::as_str));
    record_page(&site, &headers, &staff, section, &id, StatusCode::OK, Outcome { done, ..Default::default() }).await
}

/// A posted form: checks its CSRF token and the permission, sends the
/// section's API call, and answers with the next page.
pub async fn act(site: Site, headers: HeaderMap, section: &'static Section, id: Option<String>, posted: Vec<(String, String)>) -> Result<Response, PageError> {
    let value = |k: &str| posted.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    if !session::csrf_ok(&headers, &value("csrf")) {
        return Err(PageError::expired_form());
    }
    let staff = match open(&site, &headers, section, None).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let key = value("action");
    let offered: &[Action] = if id.is_some() { section.actions } else { section.create };
    let action = offered
        .iter()
        .chain(if id.is_some() { section.row } else { &[] })
        .find(|a| a.key == key)
        .ok_or_else(PageError::unknown_action)?;
    if !staff.may(action.permission) {
        return Err(forbidden());
    }
    let (path, body) = match request_of(&site, action, &posted, id.as_deref().unwrap_or_default()) {
        Ok(b) => b,
        Err(bad) => {
            let message = format!("{} {}.", bad.field, bad.reason);
            return again(&site, &headers, &staff, section, id.as_deref(), StatusCode::UNPROCESSABLE_ENTITY, Outcome { message, posted: Some((action.key, &posted)), ..Default::default() }).await;
        }
    };
    // A DELETE without fields sends no body; everything else sends its JSON object.
    let send = (action.method != Method::DELETE || !action.fields.is_empty()).then_some(body);
    let (status, answer) = site.api.send_as(action.method.clone(), &path, &staff.headers(), send).await?;
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    if !status.is_success() {
        let (status, message) = refusal(status, &answer);
        return again(&site, &headers, &staff, section, id.as_deref(), status, Outcome { message, posted: Some((action.key, &posted)), ..Default::default() }).await;
    }
    let list = section.path.to_owned();
    let here = match &id {
        Some(id) if action.after != After::List && !section.row.iter().any(|a| a.key == action.key) => format!("{list}/{}", encode(id)),
        _ => list.clone(),
    };
    let to = match action.after {
        After::Show => return again(&site, &headers, &staff, section, id.as_deref(), StatusCode::OK, Outcome { done: action.label.to_owned(), answer: Some(answer), ..Default::default() }).await,
        After::Record if !matches!(section.record, Record::None) => match answer.get(section.key).map(plain).filter(|k| !k.is_empty()) {
            Some(k) => format!("{list}/{}", encode(&k)),
            None => here,
        },
        After::List => list,
        After::Stay | After::Record => here,
    };
    Ok(Redirect::to(&format!("{to}?done={}", encode(action.key))).into_response())
}

/// An API refusal as the page shows it: the status to answer with (the
/// API's own for a client error, 502 when the API failed) and the reason in
/// words, with the field it is about.
pub(crate) fn refusal(status: StatusCode, answer: &Value) -> (StatusCode, String) {
    let mut message = answer["error"]["message"].as_str().unwrap_or("That did not work.").to_owned();
    if let Some(field) = answer["error"]["field"].as_str() {
        message = format!("{message} ({field})");
    }
    (if status.is_client_error() { status } else { StatusCode::BAD_GATEWAY }, message)
}

/// The page a form was on, drawn again with how it went.
async fn again(site: &Site, headers: &HeaderMap, staff: &Staff, section: &'static Section, id: Option<&str>, status: StatusCode, outcome: Outcome<'_>) -> Result<Response, PageError> {
    match id {
        Some(id) => record_page(site, headers, staff, section, id, status, outcome).await,
        None => list_page(site, headers, staff, section, &HashMap::new(), status, outcome).await,
    }
}

/// The routes of every section, each with its own static path.
pub fn routes(mut router: axum::Router<Site>, sections: &'static [Section]) -> axum::Router<Site> {
    use axum::routing::get;
    for section in sections {
        let base = section.path;
        router = router
            .route(
                base,
                get(move |State(site): State<Site>, headers: HeaderMap, uri: Uri, Query(q): Query<HashMap<String, String>>| list(site, headers, uri, section, q))
                    .post(move |State(site): State<Site>, headers: HeaderMap, Form(f): Form<Vec<(String, String)>>| act(site, headers, section, None, f)),
            )
            .route(
                &format!("{base}/{{id}}"),
                match section.record {
                    Record::Editor => get(crate::admin::product).post(crate::admin::save_product),
                    _ => get(move |State(site): State<Site>, headers: HeaderMap, uri: Uri, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>| record(site, headers, uri, section, id, q))
                        .post(move |State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Form(f): Form<Vec<(String, String)>>| act(site, headers, section, Some(id), f)),
                },
            );
    }
    router
}

/// The forms of `actions` drawn for another page (the order page uses the same machinery).
pub fn forms(site: &Site, staff: &Staff, actions: &[Action], target: &str, record: &Value) -> Vec<FormView> {
    actions.iter().filter(|a| staff.may(a.permission)).map(|a| form_view(site, a, target.to_owned(), record, None)).collect()
}

/// Sends one of `actions` as posted to a page outside the sections;
/// `Ok(Err((status, message)))` when the form or the API refused it.
pub async fn send(site: &Site, staff: &Staff, actions: &[Action], id: &str, posted: &[(String, String)]) -> Result<Result<(), (StatusCode, String)>, PageError> {
    let key = posted.iter().find(|(k, _)| k == "action").map(|(_, v)| v.as_str()).unwrap_or_default();
    let Some(action) = actions.iter().find(|a| a.key == key) else {
        return Err(PageError::unknown_action());
    };
    if !staff.may(action.permission) {
        return Err(forbidden());
    }
    let (path, body) = match request_of(site, action, posted, id) {
        Ok(b) => b,
        Err(bad) => return Ok(Err((StatusCode::UNPROCESSABLE_ENTITY, format!("{} {}.", bad.field, bad.reason)))),
    };
    let (status, answer) = site.api.send_as(action.method.clone(), &path, &staff.headers(), Some(body)).await?;
    if status == StatusCode::FORBIDDEN {
        return Err(forbidden());
    }
    if !status.is_success() {
        return Ok(Err(refusal(status, &answer)));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::new(crate::Api::default(), &kernel::config::Config::default())
    }

    const CREATE: Action = Action {
        key: "create",
        label: "Add",
        method: Method::POST,
        path: "/api/v1/admin/things",
        fields: &[
            field("owner", "Owner", Kind::Id),
            field("restock", "Restock", Kind::Const("true")),
            required("code", "Code", Kind::Text),
            field("value.amount", "Amount", Kind::Money),
            field("active", "Active", Kind::Bool),
            field("countries", "Countries", Kind::List),
            field("kind", "Kind", Kind::Choice(&["percent", "fixed"])),
            field("roles", "Roles", Kind::Multi(&["admin", "support"])),
            field("groups", "Groups", Kind::Groups),
            field("starts_at", "Starts", Kind::When),
            field("limit", "Limit", Kind::Int),
        ],
        permission: Permission::MarketingWrite,
        danger: false,
        fill: false,
        after: After::Record,
    };

    fn posted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_form_becomes_the_json_its_action_sends() {
        let (path, body) = request_of(&site(), &CREATE, &posted(&[
            ("code", " SAVE10 "), ("value.amount", "12.50"), ("active", "on"), ("countries", "US, CA,"),
            ("kind", "fixed"), ("roles", "support"), ("roles", "root"), ("groups", "tee, t-shirt\n\nsofa,couch"),
            ("starts_at", "2026-12-01T09:30"), ("limit", ""),
        ]), "thg_1")
        .unwrap_or_else(|b| panic!("{} {}", b.field, b.reason));
        assert_eq!(body, json!({
            "code": "SAVE10", "value": {"amount": 1250}, "active": true, "countries": ["US", "CA"], "kind": "fixed",
            "roles": ["support"], "groups": [["tee", "t-shirt"], ["sofa", "couch"]], "starts_at": "2026-12-01T09:30:00Z",
            "owner": "thg_1", "restock": true,
        }));
        assert_eq!(path, "/api/v1/admin/things");
    }

    #[test]
    fn an_edit_form_with_a_field_emptied_clears_it() {
        const EDIT: Action = Action {
            key: "update",
            label: "Save",
            method: Method::PATCH,
            path: "/api/v1/admin/things/{id}",
            fields: &[
                required("title", "Title", Kind::Text),
                field("brand", "Brand", Kind::Text),
                field("tags", "Tags", Kind::List),
                field("about", "About", Kind::Long),
                field("limit", "Limit", Kind::Int),
            ],
            permission: Permission::CatalogWrite,
            danger: false,
            fill: true,
            after: After::Stay,
        };
        let (_, body) = request_of(&site(), &EDIT, &posted(&[("title", "Mug"), ("brand", " "), ("tags", ""), ("about", "")]), "thg_1").unwrap_or_else(|b| panic!("{}", b.reason));
        assert_eq!(body, json!({"title": "Mug", "brand": null, "tags": [], "about": ""}), "what is not on the form is not touched");
        let (_, body) = request_of(&site(), &CREATE, &posted(&[("code", "A"), ("sku", "A"), ("countries", "")]), "thg_1").unwrap_or_else(|b| panic!("{}", b.reason));
        assert!(body.get("countries").is_none(), "a new thing leaves empty fields to the API's defaults: {body}");
    }

    #[test]
    fn a_bad_field_is_named() {
        for (pairs, field) in [
            (vec![("code", "")], "Code"),
            (vec![("code", "A"), ("value.amount", "12.5.0")], "Amount"),
            (vec![("code", "A"), ("kind", "free")], "Kind"),
            (vec![("code", "A"), ("limit", "ten")], "Limit"),
            (vec![("code", "A"), ("starts_at", "tomorrow")], "Starts"),
        ] {
            match request_of(&site(), &CREATE, &posted(&[pairs.as_slice(), &[("sku", "A")]].concat()), "thg_1") {
                Err(bad) => assert_eq!(bad.field, field),
                Ok(body) => panic!("{pairs:?} gave {body:?}"),
            }
        }
    }

    #[test]
    fn values_are_shown_and_edited_in_the_shops_terms() {
        let s = site();
        assert_eq!(shown(&s, &json!(1999), Show::Money), "$19.99");
        assert_eq!(shown(&s, &json!({"amount": 500, "currency": "EUR"}), Show::Money), "€5.00");
        assert_eq!(shown(&s, &json!("2026-12-04T06:25:02Z"), Show::When), "2026-12-04 06:25");
        assert_eq!(editable(&s, &json!(1250), Kind::Money), "12.50");
        assert_eq!(editable(&s, &json!([["a", "b"], ["c"]]), Kind::Groups), "a, b\nc");
        assert_eq!(get(&json!({"value": {"amount": 3}}), "value.amount"), &json!(3));
    }
}
