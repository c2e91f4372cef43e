//! The storefront's own files — stylesheet, scripts, icon — built into the
//! binary and served under names that carry a hash of their content
//! (`/assets/site.3f2a9c1b.css`), so a browser keeps each for a year and a
//! change is a new name. The plain names (`/assets/site.css`) still answer,
//! kept for minutes only.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A file served from `/assets/`.
struct Asset {
    /// Its plain name: `site.css`.
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 5] = [
    Asset { name: "site.css", content_type: "text/css; charset=utf-8", body: include_str!("../assets/site.css") },
    Asset { name: "search.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/search.js") },
    Asset { name: "stripe.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/stripe.js") },
    Asset { name: "checkout.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/checkout.js") },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_str!("../assets/favicon.svg") },
];

/// A fingerprinted name's answer: the same bytes for as long as the name lives.
const FOREVER: &str = "public, max-age=31536000, immutable";
/// A plain name's (or an old fingerprint's) answer: its content may change with the next release.
const BRIEFLY: &str = "public, max-age=300";

/// Each asset's fingerprinted name, in the order of [`ASSETS`], hashed once.
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| fingerprinted(a.name, a.body.as_bytes())).collect());

/// `site.css` → `site.<first 8 hex digits of its SHA-256>.css`.
fn fingerprinted(name: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hash: String = digest.as_ref().iter().take(4).map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    }
}

/// The address pages link an asset by (`url("site.css")` →
/// `/assets/site.3f2a9c1b.css`); an unknown name is linked plainly.
pub fn url(name: &str) -> String {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => format!("/assets/{}", NAMES[i]),
        None => format!("/assets/{name}"),
    }
}

/// `name` is the asset `a`, plainly or under some fingerprint: whether it
/// is the current one.
fn matches(a: &Asset, current: &str, name: &str) -> Option<bool> {
    if name == a.name {
        return Some(false);
    }
    if name == current {
        return Some(true);
    }
    // `site.<hash>.css` of another release: the current file, kept briefly.
    let (stem, ext) = a.name.rsplit_once('.')?;
    let hash = name.strip_prefix(stem)?.strip_prefix('.')?.strip_suffix(ext)?.strip_suffix('.')?;
    (hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(false)
}

pub async fn serve(Path(name): Path<String>) -> Response {
    for (a, current) in ASSETS.iter().zip(NAMES.iter()) {
        if let Some(fresh) = matches(a, current, &name) {
            let cache = HeaderValue::from_static(if fresh { FOREVER } else { BRIEFLY });
            return ([(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)), (header::CACHE_CONTROL, cache)], a.body).into_response();
        }
    }
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "No such file.").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = url("site.css");
        assert!(css.starts_with("/assets/site.") && css.ends_with(".css") && css.len() == "/assets/site.12345678.css".len(), "{css}");
        assert_ne!(fingerprinted("a.css", b"one"), fingerprinted("a.css", b"two"));
        assert_eq!(fingerprinted("a.css", b"one"), fingerprinted("a.css", b"one"));
        assert_eq!(url("nothing.txt"), "/assets/nothing.txt");
    }

    #[test]
    fn names_are_recognised() {
        let a = &ASSETS[0];
        let current = fingerprinted(a.name, a.body.as_bytes());
        assert_eq!(matches(a, &current, &current), Some(true));
        assert_eq!(matches(a, &current, "site.css"), Some(false));
        assert_eq!(matches(a, &current, "site.0123abcd.css"), Some(false), "an earlier release's");
        for other in ["site.js", "site..css", "site.xyz.css", "site.0123abcd0.css", "search.js", "../site.css"] {
            assert_eq!(matches(a, &current, other), None, "{other}");
        }
    }
}
