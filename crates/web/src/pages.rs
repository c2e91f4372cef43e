//! The storefront's pages: home, category, search and product, rendered
//! from the API's answers with askama (templates checked when compiled,
//! every value HTML-escaped unless a template says otherwise).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::api::{ApiError, encode};
use crate::form::{Form, Query};

/// A product in a list: what the search and recommendation answers hold.
#[derive(Debug, Clone, Deserialize)]
struct Hit {
    slug: String,
    title: String,
    brand: Option<String>,
    price: Option<i64>,
    thumbnail: Option<Thumb>,
}

#[derive(Debug, Deserialize)]
struct Hits {
    data: Vec<Hit>,
}

/// A product's picture as a list shows it (a card, a cart line): the
/// catalog's copy sized for lists. Draw it with its `width` and `height`
/// (the box is kept while it loads), `alt=""` beside the product's name,
/// and `loading="lazy"` below the first screen; see `card.html`.
#[derive(Debug, Clone, Deserialize)]
pub struct Thumb {
    pub url: String,
    /// Pixels; a picture kept elsewhere may have no recorded size, and is
    /// then drawn in a square box.
    #[serde(default = "square")]
    pub width: u32,
    #[serde(default = "square")]
    pub height: u32,
}

fn square() -> u32 {
    LIST_WIDTH
}

/// Narrowest copy a list draws from: sharp in a phone's two columns at
/// twice the pixels (the catalog picks alike for search).
const LIST_WIDTH: u32 = 320;

#[derive(Debug, Clone, Default, Deserialize)]
struct Thumbnail {
    width: u32,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Media {
    url: String,
    #[serde(default)]
    alt: String,
    width: Option<u32>,
    height: Option<u32>,
    /// Smaller copies, narrowest first.
    #[serde(default)]
    thumbnails: Vec<Thumbnail>,
}

impl Media {
    /// The height of a copy `width` wide, when the picture's size is known.
    fn height_at(&self, width: u32) -> Option<u32> {
        let (w, h) = (self.width.filter(|w| *w > 0)?, self.height?);
        u32::try_from((u64::from(h) * u64::from(width) / u64::from(w)).max(1)).ok()
    }

    /// The copy for lists: the narrowest at least [`LIST_WIDTH`] wide, else
    /// the widest, else the picture itself (as the catalog picks for the
    /// search's cards; checked here).
    #[cfg(test)]
    fn list_copy(&self) -> Thumb {
        self.copy_at_least(LIST_WIDTH)
    }

    /// The narrowest copy at least `min` pixels wide, else the widest, else
    /// the picture itself.
    fn copy_at_least(&self, min: u32) -> Thumb {
        let chosen = self.thumbnails.iter().filter(|t| t.width >= min).min_by_key(|t| t.width).or_else(|| self.thumbnails.iter().max_by_key(|t| t.width));
        match chosen {
            Some(t) => Thumb { url: t.url.clone(), width: t.width, height: self.height_at(t.width).unwrap_or(t.width) },
            None => match (self.width, self.height) {
                (Some(width), Some(height)) => Thumb { url: self.url.clone(), width, height },
                _ => Thumb { url: self.url.clone(), width: LIST_WIDTH, height: LIST_WIDTH },
            },
        }
    }
}

/// A product card as the templates show it.
pub struct Card {
    pub url: String,
    pub title: String,
    pub brand: String,
    pub price: String,
    pub image: Option<Thumb>,
    /// Drawn below the first screen: its picture loads when scrolled near.
    pub lazy: bool,
}

/// Cards of a list whose pictures load at once (about one row of the
/// grid); the rest wait until scrolled near.
const EAGER_CARDS: usize = 4;

/// `?done=…`: what a page that was redirected to after a change says was done.
#[derive(Deserialize)]
pub struct DoneQuery {
    #[serde(default)]
    pub done: String,
}

/// A product and its variant as a line shows them: the variant is left out
/// when a product has only its default one.
pub(crate) fn item_name(title: &str, variant: &str) -> String {
    if variant.is_empty() || variant == "Default" { title.to_owned() } else { format!("{title} — {variant}") }
}

/// A price as every page shows it: `$68.99`, `€12.50`, `CHF 40.00`.
pub(crate) fn money(amount: i64, currency: &str) -> String {
    match kernel::money::Currency::parse(currency) {
        Ok(c) => c.format_price(amount),
        Err(_) => amount.to_string(),
    }
}

impl Site {
    /// The `index`th card of a list whose first `eager` pictures load at once.
    fn card(&self, h: &Hit, index: usize, eager: usize) -> Card {
        Card {
            url: format!("/products/{}", encode(&h.slug)),
            title: h.title.clone(),
            brand: h.brand.clone().unwrap_or_default(),
            price: h.price.map(|p| money(p, &self.currency)).unwrap_or_default(),
            image: h.thumbnail.clone(),
            lazy: index >= eager,
        }
    }

    fn cards_of(&self, hits: &[Hit], eager: usize) -> Vec<Card> {
        hits.iter().enumerate().map(|(i, h)| self.card(h, i, eager)).collect()
    }

    async fn cards(&self, path: &str, eager: usize) -> Vec<Card> {
        match self.api.get::<Hits>(path).await {
            Ok(h) => self.cards_of(&h.data, eager),
            Err(e) => {
                tracing::warn!(path, error = %e, "a page left out a list it could not load");
                Vec::new()
            }
        }
    }

}

/// A product's pictures as the catalog's product answer holds them: read
/// (`#[serde(flatten)]`) along with whatever else a page looks up about the
/// product, so a cart or order line's picture costs no call of its own.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Pictures {
    #[serde(default)]
    media: Vec<Media>,
}

/// Narrowest copy a cart or order line draws from: its picture is a small
/// square beside the name, sharp at twice the pixels.
const LINE_WIDTH: u32 = 128;

impl Pictures {
    /// The first picture, in the copy for a cart or order line: `None` when
    /// the product has none.
    pub(crate) fn line_thumbnail(&self) -> Option<Thumb> {
        self.media.first().map(|m| m.copy_at_least(LINE_WIDTH))
    }
}

/// What went wrong, as a page: 404 for what is not there, 503 (with
/// `Retry-After`) while the API is away, 500 otherwise.
pub struct PageError(pub StatusCode, pub String);

/// What a page says while the API cannot be reached.
pub(crate) const UNAVAILABLE: &str = "The shop cannot answer just now. Please try again in a moment.";

impl PageError {
    /// A form posted without its token, or with another browser's (403).
    pub(crate) fn expired_form() -> Self {
        PageError(StatusCode::FORBIDDEN, "This form has expired. Please go back, reload the page and try again.".into())
    }

    /// A form asking for an action its page does not offer (400).
    pub(crate) fn unknown_action() -> Self {
        PageError(StatusCode::BAD_REQUEST, "This form asks for something the console does not do.".into())
    }
}

/// The API's error message, for the page.
pub(crate) fn message_of(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or("That did not work; please try again.").to_owned()
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e.status() {
            Some(StatusCode::NOT_FOUND) => PageError(StatusCode::NOT_FOUND, "This page does not exist.".into()),
            Some(StatusCode::TOO_MANY_REQUESTS) => {
                PageError(StatusCode::TOO_MANY_REQUESTS, "Too many requests from here just now. Please wait a minute and try again.".into())
            }
            _ if e.unavailable() => {
                tracing::warn!(error = %e, "the API is unavailable; the page asks the shopper to come back shortly");
                PageError(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE.into())
            }
            _ => {
                tracing::error!(error = %e, "a page could not be made");
                PageError(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again.".into())
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    shop: &'a str,
    query: &'a str,
    message: &'a str,
    /// The page of the form that failed, to go back to.
    back: Option<&'a str>,
}

/// An error page of the shop `shop` (its status is the caller's).
pub(crate) fn error_page(shop: &str, message: &str, back: Option<&str>) -> Response {
    render(&ErrorPage { shop, query: "", message, back })
}

impl IntoResponse for PageError {
    /// Drawn whole by [`crate::form::error_pages`], which knows the shop's
    /// name; the page drawn here stands in where that layer is not.
    fn into_response(self) -> Response {
        let mut response = (self.0, error_page("", &self.1, None)).into_response();
        response.extensions_mut().insert(crate::form::Failure(self.1));
        response
    }
}

/// An address no page has.
pub async fn not_found() -> PageError {
    PageError(StatusCode::NOT_FOUND, "This page does not exist.".into())
}

pub(crate) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a template did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side.").into_response()
        }
    }
}

// Home

#[derive(Debug, Clone, Deserialize)]
struct Category {
    slug: String,
    name: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home<'a> {
    shop: &'a str,
    query: &'a str,
    categories: Vec<(String, String)>,
    trending: Vec<Card>,
    newest: Vec<Card>,
}

pub async fn home(State(site): State<Site>) -> Result<Response, PageError> {
    let categories: Vec<Category> = site.api.get("/api/v1/categories").await?;
    let categories = categories.iter().map(|c| (format!("/categories/{}", encode(&c.slug)), c.name.clone())).collect();
    let trending = site.cards("/api/v1/recommendations/trending?limit=8", EAGER_CARDS).await;
    // Below the first list when there is one.
    let newest = site.cards("/api/v1/search?sort=newest&limit=8", if trending.is_empty() { EAGER_CARDS } else { 0 }).await;
    Ok(listing(render(&Home { shop: &site.name, query: "", categories, trending, newest })))
}

/// A page of lists (search's answers): kept by the page cache for its few
/// seconds, and forgotten sooner when a product comes into or runs out of
/// stock.
fn listing(mut response: Response) -> Response {
    crate::page_cache::shows(&mut response, kernel::news::Shows { products: Vec::new(), listing: true });
    response
}

// Search and categories

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    category: Option<String>,
    brand: Option<String>,
    sort: Option<String>,
    min_price: Option<i64>,
    max_price: Option<i64>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Count {
    value: String,
    count: u64,
}

#[derive(Debug, Deserialize)]
struct Band {
    min: i64,
    max: Option<i64>,
    count: u64,
}

#[derive(Debug, Deserialize)]
struct Facets {
    category: Vec<Count>,
    brand: Vec<Count>,
    price: Vec<Band>,
}

#[derive(Debug, Deserialize)]
struct Found {
    data: Vec<Hit>,
    total: usize,
    next_cursor: Option<String>,
    facets: Facets,
    did_you_mean: Option<String>,
}

/// A facet choice: its label, how many it holds, the link that applies it, and whether it is applied.
pub struct Choice {
    pub label: String,
    pub count: u64,
    pub url: String,
    pub chosen: bool,
}

#[derive(Template)]
#[template(path = "results.html")]
struct Results<'a> {
    shop: &'a str,
    query: &'a str,
    heading: String,
    description: String,
    total: usize,
    cards: Vec<Card>,
    did_you_mean: Option<(String, String)>,
    categories: Vec<Choice>,
    brands: Vec<Choice>,
    prices: Vec<Choice>,
    sorts: Vec<Choice>,
    next: Option<String>,
}

/// Rebuilds `base` (a page path) with the filters of `p`, `change` applied.
fn link(base: &str, p: &SearchParams, change: &[(&str, Option<String>)]) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let current = [
        ("q", Some(p.q.clone()).filter(|q| !q.is_empty())),
        ("category", p.category.clone()),
        ("brand", p.brand.clone()),
        ("sort", p.sort.clone()),
        ("min_price", p.min_price.map(|v| v.to_string())),
        ("max_price", p.max_price.map(|v| v.to_string())),
    ];
    for (key, value) in &current {
        let value = change.iter().find(|(k, _)| k == key).map_or(value.clone(), |(_, v)| v.clone());
        if let Some(v) = value {
            pairs.push((*key, v));
        }
    }
    for (key, value) in change {
        if let Some(v) = value
            && !current.iter().any(|(k, _)| k == key)
        {
            pairs.push((key, v.clone()));
        }
    }
    if pairs.is_empty() {
        return base.to_owned();
    }
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("{base}?{}", query.join("&"))
}

impl SearchParams {
    /// What a kept page of `base` is known by: the filters this page reads,
    /// in one order (a category page is its own category, so that filter is not read).
    pub(crate) fn page_key(mut self, base: &str) -> String {
        self.category = None;
        let after = self.after.clone();
        link(base, &self, &[("after", after)])
    }
}

const SORTS: [(&str, &str); 4] = [("relevance", "Best match"), ("newest", "Newest"), ("price_asc", "Price, low to high"), ("price_desc", "Price, high to low")];

async fn results(site: &Site, base: &str, heading: String, p: SearchParams, category_names: &[(String, String, String)]) -> Result<Response, PageError> {
    let mut api = format!("/api/v1/search?limit=24&q={}", encode(&p.q));
    for (key, value) in [("category", &p.category), ("brand", &p.brand), ("sort", &p.sort), ("starting_after", &p.after)] {
        if let Some(v) = value {
            api += &format!("&{key}={}", encode(v));
        }
    }
    for (key, value) in [("min_price", p.min_price), ("max_price", p.max_price)] {
        if let Some(v) = value {
            api += &format!("&{key}={v}");
        }
    }
    let found: Found = match site.api.get(&api).await {
        Ok(f) => f,
        // A filter or cursor the search refuses (a bad sort, a page past the
        // last one) shows the unfiltered page.
        Err(ApiError::Status { status: StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST, .. }) => {
            return Ok(axum::response::Redirect::to(base).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let name_of = |id: &str| category_names.iter().find(|(i, _, _)| i == id).map(|(_, _, n)| n.clone());
    let categories = found
        .facets
        .category
        .iter()
        .filter_map(|c| {
            let name = name_of(&c.value)?;
            let chosen = p.category.as_deref() == Some(c.value.as_str());
            Some(Choice { label: name, count: c.count, url: link(base, &p, &[("category", (!chosen).then(|| c.value.clone()))]), chosen })
        })
        .collect();
    let brands = found
        .facets
        .brand
        .iter()
        .map(|b| {
            let chosen = p.brand.as_deref() == Some(b.value.as_str());
            Choice { label: b.value.clone(), count: b.count, url: link(base, &p, &[("brand", (!chosen).then(|| b.value.clone()))]), chosen }
        })
        .collect();
    let prices = found
        .facets
        .price
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| {
            let chosen = p.min_price == Some(b.min) && p.max_price == b.max;
            let label = match b.max {
                Some(max) => format!("{} – {}", money(b.min, &site.currency), money(max, &site.currency)),
                None => format!("{} and up", money(b.min, &site.currency)),
            };
            let change = if chosen {
                [("min_price", None), ("max_price", None)]
            } else {
                [("min_price", Some(b.min.to_string())), ("max_price", b.max.map(|m| m.to_string()))]
            };
            Choice { label, count: b.count, url: link(base, &p, &change), chosen }
        })
        .collect();
    let sorts = SORTS
        .iter()
        .map(|(value, label)| {
            let chosen = p.sort.as_deref().unwrap_or("relevance") == *value;
            Choice { label: (*label).into(), count: 0, url: link(base, &p, &[("sort", Some((*value).to_owned()))]), chosen }
        })
        .collect();
    let next = found.next_cursor.as_ref().map(|c| link(base, &p, &[("after", Some(c.clone()))]));
    let did_you_mean = found.did_you_mean.map(|d| (link(base, &p, &[("q", Some(d.clone()))]), d));
    let description = format!("{} products{} at {}", found.total, if p.q.is_empty() { String::new() } else { format!(" for “{}”", p.q) }, site.name);
    let page = Results {
        shop: &site.name,
        query: &p.q,
        heading,
        description,
        total: found.total,
        cards: site.cards_of(&found.data, EAGER_CARDS),
        did_you_mean,
        categories,
        brands,
        prices,
        sorts,
        next,
    };
    Ok(render(&page))
}

/// Every category as (id, slug, name), depth first.
async fn all_categories(site: &Site) -> Result<Vec<(String, String, String)>, PageError> {
    #[derive(Deserialize)]
    struct Node {
        id: String,
        slug: String,
        name: String,
        #[serde(default)]
        children: Vec<Node>,
    }
    fn walk(nodes: &[Node], out: &mut Vec<(String, String, String)>) {
        for n in nodes {
            out.push((n.id.clone(), n.slug.clone(), n.name.clone()));
            walk(&n.children, out);
        }
    }
    let tree: Vec<Node> = site.api.get("/api/v1/categories").await?;
    let mut out = Vec::new();
    walk(&tree, &mut out);
    Ok(out)
}

pub async fn search(State(site): State<Site>, Query(p): Query<SearchParams>) -> Result<Response, PageError> {
    let names = all_categories(&site).await?;
    let heading = if p.q.is_empty() { "All products".to_owned() } else { format!("Results for “{}”", p.q) };
    results(&site, "/search", heading, p, &names).await
}

pub async fn category(State(site): State<Site>, Path(slug): Path<String>, Query(mut p): Query<SearchParams>) -> Result<Response, PageError> {
    let names = all_categories(&site).await?;
    let (id, _, name) = names.iter().find(|(_, s, _)| *s == slug).cloned().ok_or(PageError(StatusCode::NOT_FOUND, "This category does not exist.".into()))?;
    // The page is the category; other categories are links to their own pages.
    p.category = Some(id);
    let base = format!("/categories/{}", encode(&slug));
    results(&site, &base, name, p, &names).await.map(listing)
}

// Product

#[derive(Debug, Deserialize)]
struct Price {
    amount: i64,
    currency: String,
}

#[derive(Debug, Deserialize)]
struct Variant {
    sku: String,
    title: String,
    #[serde(default)]
    option_values: Vec<String>,
    #[serde(default)]
    prices: std::collections::BTreeMap<String, Price>,
    in_stock: bool,
    available: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ProductOption {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Product {
    id: String,
    slug: String,
    title: String,
    #[serde(default)]
    description_html: String,
    brand: Option<String>,
    seo_title: Option<String>,
    seo_description: Option<String>,
    #[serde(default)]
    options: Vec<ProductOption>,
    #[serde(default)]
    variants: Vec<Variant>,
    #[serde(default)]
    media: Vec<Media>,
    #[serde(default)]
    categories: Vec<Category>,
}

/// A variant as the product page offers it.
pub struct Offer {
    pub sku: String,
    /// Its option values ("M", "M / Red"), or its title without options.
    pub label: String,
    pub price: String,
    /// "Only 3 left", "Out of stock"; empty when plainly in stock.
    pub stock: String,
    pub in_stock: bool,
    /// The one chosen when the page opens: the first that can be bought.
    pub checked: bool,
}

/// A picture of the product as its page draws it: a copy the catalog
/// sized, the others offered to the browser by width.
pub struct Picture {
    pub src: String,
    /// `url 480w, url 960w`; empty when there are no copies.
    pub srcset: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub alt: String,
}

/// The widest copy the product page draws by default (the catalog makes
/// 160, 480 and 960 pixels wide).
const PAGE_WIDTH: u32 = 960;

impl Media {
    fn picture(&self, fallback_alt: &str) -> Picture {
        let alt = if self.alt.is_empty() { fallback_alt.to_owned() } else { self.alt.clone() };
        let srcset = self.thumbnails.iter().map(|t| format!("{} {}w", t.url, t.width)).collect::<Vec<_>>().join(", ");
        match self.thumbnails.iter().filter(|t| t.width <= PAGE_WIDTH).max_by_key(|t| t.width) {
            Some(t) => Picture { src: t.url.clone(), srcset, width: Some(t.width), height: self.height_at(t.width), alt },
            None => Picture { src: self.url.clone(), srcset: String::new(), width: self.width, height: self.height, alt },
        }
    }
}

/// Below this many, the page says how many are left.
const FEW_LEFT: i64 = 5;

#[derive(Template)]
#[template(path = "product.html")]
struct ProductPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    title: String,
    description: String,
    brand: String,
    body_html: String,
    pictures: Vec<Picture>,
    offers: Vec<Offer>,
    /// What the variants differ by ("Size", "Size and colour"); empty when they differ by nothing named.
    choose: String,
    /// The product's price: one, or "From $12.00" when the variants' differ.
    price: String,
    /// Whether each variant shows its own price.
    prices_differ: bool,
    /// No variant can be bought: the page offers only to tell when it is back.
    sold_out: bool,
    breadcrumbs: Vec<(String, String)>,
    json_ld: String,
    canonical: String,
    also_bought: Vec<Card>,
    similar: Vec<Card>,
    /// Variants a shopper may ask to hear about: (sku, label).
    waiting: Vec<(String, String)>,
    slug: String,
    /// The page's own path, sent back by its forms.
    from: String,
    notice: String,
    /// Why a form on this page was not taken, shown at the form.
    message: String,
}

/// JSON for a `<script>` element: nothing in it can close the element.
fn script_json(v: &Value) -> String {
    v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The text of an HTML fragment (the catalog's rendered description), for
/// meta descriptions and structured data.
fn text_of(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

fn plain(text: &str, max: usize) -> String {
    let words: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= max {
        return words;
    }
    let cut: String = words.chars().take(max).collect();
    format!("{}…", cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head))
}

/// "Size", "Size and colour": the product's options as one phrase.
fn options_phrase(options: &[ProductOption]) -> String {
    let names: Vec<&str> = options.iter().map(|o| o.name.trim()).filter(|n| !n.is_empty()).collect();
    let mut phrase = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            phrase += if i + 1 == names.len() { " and " } else { ", " };
            phrase += &name.to_lowercase();
        } else {
            phrase += name;
        }
    }
    phrase
}

/// "Please choose a size": what a shopper who sent no variant is told.
fn choose_message(choose: &str) -> String {
    if choose.is_empty() {
        return "Please choose one of the options.".into();
    }
    let lower = choose.to_lowercase();
    let article = if lower.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("Please choose {article} {lower}.")
}

/// The variants as offers: the first that can be bought is chosen.
fn offers_of(variants: &[Variant], currency: &str) -> Vec<Offer> {
    let first_available = variants.iter().position(|v| v.in_stock);
    variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let price = v.prices.get(currency).map(|m| money(m.amount, &m.currency)).unwrap_or_default();
            let stock = match (v.in_stock, v.available) {
                (false, _) => "Out of stock".to_owned(),
                (true, Some(n)) if n <= FEW_LEFT => format!("Only {n} left"),
                (true, _) => String::new(),
            };
            let label = if v.option_values.is_empty() { v.title.clone() } else { v.option_values.join(" / ") };
            Offer { sku: v.sku.clone(), label, price, stock, in_stock: v.in_stock, checked: Some(i) == first_available }
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct ProductQuery {
    #[serde(default)]
    notified: Option<u8>,
}

impl ProductQuery {
    /// What a kept product page is known by: whether it thanks for a notify-me.
    pub(crate) fn page_key(&self, base: &str) -> String {
        if self.notified.is_some() { format!("{base}?notified") } else { base.to_owned() }
    }
}

pub async fn product(State(site): State<Site>, headers: axum::http::HeaderMap, Path(slug): Path<String>, Query(q): Query<ProductQuery>) -> Result<Response, PageError> {
    let notice = if q.notified.is_some() { "We will email you once, when it is back in stock." } else { "" };
    product_page(&site, &headers, &slug, StatusCode::OK, notice, None).await
}

/// The product page again, after a form on it was not taken: `message`
/// says why (by default, that no variant was chosen: "Please choose a size").
pub(crate) async fn product_again(site: &Site, headers: &axum::http::HeaderMap, slug: &str, status: StatusCode, message: Option<String>) -> Result<Response, PageError> {
    product_page(site, headers, slug, status, "", Some(message)).await
}

async fn product_page(site: &Site, headers: &axum::http::HeaderMap, slug: &str, status: StatusCode, notice: &str, message: Option<Option<String>>) -> Result<Response, PageError> {
    let (csrf, set_csrf) = crate::session::csrf(headers, site.secure());
    let p: Product = site.api.get(&format!("/api/v1/products/{}", encode(slug))).await?;
    let currency = site.currency.as_str();
    let offers = offers_of(&p.variants, currency);
    let canonical = format!("{}/products/{}", site.public_url, encode(&p.slug));
    let pictures: Vec<Picture> = p.media.iter().map(|m| m.picture(&p.title)).collect();
    let ld_offers: Vec<Value> = p
        .variants
        .iter()
        .filter_map(|v| {
            let m = v.prices.get(currency)?;
            let digits = kernel::money::Currency::parse(&m.currency).map(|c| c.format_decimal(m.amount)).unwrap_or_default();
            Some(json!({"@type": "Offer", "sku": v.sku, "price": digits, "priceCurrency": m.currency, "url": canonical,
                "availability": if v.in_stock { "https://schema.org/InStock" } else { "https://schema.org/OutOfStock" }}))
        })
        .collect();
    let mut ld = json!({"@context": "https://schema.org", "@type": "Product", "name": p.title, "url": canonical,
        "description": plain(&text_of(&p.description_html), 500), "sku": p.variants.first().map(|v| v.sku.clone()), "offers": ld_offers});
    if let Some(b) = &p.brand {
        ld["brand"] = json!({"@type": "Brand", "name": b});
    }
    if !p.media.is_empty() {
        // Search engines are given the pictures themselves.
        ld["image"] = json!(p.media.iter().map(|m| m.url.clone()).collect::<Vec<_>>());
    }
    let also_bought = site.cards(&format!("/api/v1/products/{}/recommendations?kind=also_bought&limit=4", encode(&p.id)), 0).await;
    let similar = site.cards(&format!("/api/v1/products/{}/recommendations?kind=similar&limit=4", encode(&p.id)), 0).await;
    let waiting: Vec<(String, String)> = offers.iter().filter(|o| !o.in_stock).map(|o| (o.sku.clone(), o.label.clone())).collect();
    let choose = if p.options.is_empty() && offers.len() > 1 { "Option".to_owned() } else { options_phrase(&p.options) };
    let amounts: Vec<i64> = p.variants.iter().filter_map(|v| v.prices.get(currency).map(|m| m.amount)).collect();
    let prices_differ = amounts.iter().any(|a| Some(a) != amounts.first());
    let price = match amounts.iter().min() {
        Some(min) if prices_differ => format!("From {}", money(*min, currency)),
        Some(min) => money(*min, currency),
        None => String::new(),
    };
    let message = message.map(|m| m.unwrap_or_else(|| choose_message(&choose))).unwrap_or_default();
    let page = ProductPage {
        shop: &site.name,
        query: "",
        csrf,
        sold_out: !offers.iter().any(|o| o.in_stock),
        waiting,
        slug: p.slug.clone(),
        from: format!("/products/{}", encode(&p.slug)),
        notice: notice.to_owned(),
        message,
        title: p.seo_title.clone().unwrap_or_else(|| p.title.clone()),
        description: p.seo_description.clone().unwrap_or_else(|| plain(&text_of(&p.description_html), 160)),
        brand: p.brand.clone().unwrap_or_default(),
        body_html: p.description_html.clone(),
        pictures,
        offers,
        choose,
        price,
        prices_differ,
        breadcrumbs: p.categories.iter().map(|c| (format!("/categories/{}", encode(&c.slug)), c.name.clone())).collect(),
        json_ld: script_json(&ld),
        canonical,
        also_bought,
        similar,
    };
    let mut response = (status, render(&page)).into_response();
    // The page cache keeps it until the catalog announces a change of it.
    crate::page_cache::shows(&mut response, kernel::news::Shows { products: vec![p.id.clone()], listing: false });
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    if let Some(cookie) = set_csrf {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct NotifyForm {
    #[serde(default)]
    csrf: String,
    email: String,
    sku: String,
}

/// "Email me when it is back": the notify API's alert for one SKU.
pub async fn notify_me(State(site): State<Site>, headers: axum::http::HeaderMap, Path(slug): Path<String>, Form(f): Form<NotifyForm>) -> Result<Response, PageError> {
    if !crate::session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let p: Value = site.api.get(&format!("/api/v1/products/{}", encode(&slug))).await?;
    let id = p["id"].as_str().unwrap_or_default();
    let mut credentials = Vec::new();
    if let Some(access) = crate::session::cookie(&headers, crate::account::ACCESS) {
        credentials.push(("authorization", format!("Bearer {access}")));
    }
    let path = format!("/api/v1/products/{}/notify-me", encode(id));
    let (status, body) = site.api.send_as(axum::http::Method::POST, &path, &credentials, Some(json!({"email": f.email, "sku": f.sku}))).await?;
    if status.is_success() {
        return Ok(axum::response::Redirect::to(&format!("/products/{}?notified=1", encode(&slug))).into_response());
    }
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        // Shown at the form, on the product's page.
        return product_again(&site, &headers, &slug, status, Some(message_of(&body))).await;
    }
    Err(PageError(status, message_of(&body)))
}

// For robots

pub async fn robots(State(site): State<Site>) -> Response {
    let body = format!(
        "User-agent: *\nDisallow: /admin\nDisallow: /cart\nDisallow: /checkout\nDisallow: /account\nDisallow: /api/\n\nSitemap: {}/sitemap.xml\n",
        site.public_url
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct ProductPage2 {
    data: Vec<Value>,
    has_more: bool,
    next_cursor: Option<String>,
}

/// Every active product and category, for search engines (up to 50,000 addresses).
pub async fn sitemap(State(site): State<Site>) -> Result<Response, PageError> {
    let mut urls = vec![format!("{}/", site.public_url)];
    for (_, slug, _) in all_categories(&site).await? {
        urls.push(format!("{}/categories/{}", site.public_url, encode(&slug)));
    }
    let mut after: Option<String> = None;
    while urls.len() < 50_000 {
        let path = match &after {
            Some(c) => format!("/api/v1/products?limit=100&starting_after={}", encode(c)),
            None => "/api/v1/products?limit=100".to_owned(),
        };
        let page: ProductPage2 = site.api.get(&path).await?;
        for p in &page.data {
            if let Some(slug) = p.get("slug").and_then(Value::as_str) {
                urls.push(format!("{}/products/{}", site.public_url, encode(slug)));
            }
        }
        match (page.has_more, page.next_cursor) {
            (true, Some(c)) => after = Some(c),
            _ => break,
        }
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n");
    for u in urls {
        xml += &format!("  <url><loc>{}</loc></url>\n", crate::xml_escape(&u));
    }
    xml += "</urlset>\n";
    Ok(([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], xml).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_its_element() {
        let v = json!({"name": "</script><script>alert(1)</script> & co"});
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).ok(), Some(v), "still the same JSON");
    }

    #[test]
    fn links_keep_the_other_filters() {
        let p = SearchParams { q: "tee shirt".into(), category: None, brand: Some("Acme".into()), sort: None, min_price: None, max_price: None, after: Some("x".into()) };
        assert_eq!(link("/search", &p, &[("sort", Some("newest".into()))]), "/search?q=tee%20shirt&brand=Acme&sort=newest");
        assert_eq!(link("/search", &p, &[("brand", None)]), "/search?q=tee%20shirt");
        assert_eq!(link("/c", &SearchParams { q: String::new(), category: None, brand: None, sort: None, min_price: None, max_price: None, after: None }, &[]), "/c");
    }

    #[test]
    fn the_text_of_html() {
        assert_eq!(plain(&text_of("<p>A <strong>solid</strong> lamp &amp; shade</p>"), 100), "A solid lamp & shade");
    }

    fn variant(sku: &str, size: &str, in_stock: bool, available: Option<i64>) -> Variant {
        let prices = [("USD".to_owned(), Price { amount: 6899, currency: "USD".into() })].into_iter().collect();
        Variant { sku: sku.into(), title: size.into(), option_values: vec![size.into()], prices, in_stock, available }
    }

    #[test]
    fn the_first_variant_that_can_be_bought_is_chosen() {
        let offers = offers_of(&[variant("S", "S", false, Some(0)), variant("M", "M", true, Some(3)), variant("L", "L", true, None)], "USD");
        let checked: Vec<&str> = offers.iter().filter(|o| o.checked).map(|o| o.sku.as_str()).collect();
        assert_eq!(checked, ["M"], "never the sold-out first size");
        assert_eq!((offers[0].stock.as_str(), offers[1].stock.as_str(), offers[2].stock.as_str()), ("Out of stock", "Only 3 left", ""));
        assert_eq!(offers[1].price, "$68.99");
        let none = offers_of(&[variant("S", "S", false, Some(0))], "USD");
        assert!(!none[0].checked, "a sold-out product has nothing to choose");
    }

    #[test]
    fn pickers_are_named_by_their_options() {
        let named = |names: &[&str]| options_phrase(&names.iter().map(|n| ProductOption { name: (*n).into() }).collect::<Vec<_>>());
        assert_eq!(named(&["Size"]), "Size");
        assert_eq!(named(&["Size", "Colour"]), "Size and colour");
        assert_eq!(named(&["Size", "Colour", "Fit"]), "Size, colour and fit");
        assert_eq!(choose_message("Size"), "Please choose a size.");
        assert_eq!(choose_message("Edition"), "Please choose an edition.");
        assert_eq!(choose_message(""), "Please choose one of the options.");
    }

    #[test]
    fn lists_and_pages_draw_the_sized_copies() {
        let t = |width: u32| Thumbnail { width, url: format!("/media/p-{width}.jpg") };
        let m = Media { url: "/media/p.png".into(), alt: String::new(), width: Some(1200), height: Some(900), thumbnails: vec![t(160), t(480), t(960)] };
        let card = m.list_copy();
        assert_eq!((card.url.as_str(), card.width, card.height), ("/media/p-480.jpg", 480, 360));
        let page = m.picture("Lamp");
        assert_eq!((page.src.as_str(), page.width, page.height, page.alt.as_str()), ("/media/p-960.jpg", Some(960), Some(720), "Lamp"));
        assert_eq!(page.srcset, "/media/p-160.jpg 160w, /media/p-480.jpg 480w, /media/p-960.jpg 960w");
        let small = Media { url: "/media/s.png".into(), alt: "A cup".into(), width: Some(200), height: Some(100), thumbnails: vec![t(160)] };
        assert_eq!(small.list_copy().url, "/media/p-160.jpg", "the widest copy there is");
        let elsewhere = Media { url: "https://cdn.example/x.jpg".into(), alt: String::new(), width: None, height: None, thumbnails: Vec::new() };
        let card = elsewhere.list_copy();
        assert_eq!((card.url.as_str(), card.width, card.height), ("https://cdn.example/x.jpg", LIST_WIDTH, LIST_WIDTH));
        assert_eq!(elsewhere.picture("X").width, None);
    }

    #[test]
    fn prices_are_shown_for_their_currency() {
        assert_eq!(money(6899, "USD"), "$68.99");
        assert_eq!(money(1250, "EUR"), "€12.50");
        assert_eq!(money(999, "GBP"), "£9.99");
    }

    #[test]
    fn descriptions_are_cut_at_a_word() {
        assert_eq!(plain("a  b\nc", 10), "a b c");
        assert_eq!(plain("one two three four", 10), "one two…");
    }
}
