//! What the pages read from a request (a posted form, an address's query)
//! and what a person sees when it cannot be read: a page of the shop, with
//! its header and a message in words, never the framework's text.
//!
//! Every error page passes through [`error_pages`], which draws it with the
//! shop's name; a form that fails on the product page draws that page
//! again, with the message where the shopper is looking.

use axum::body::Body;
use axum::extract::rejection::{FormRejection, RawFormRejection};
use axum::extract::{FromRequest, FromRequestParts, RawForm, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::Site;
use crate::pages::PageError;

/// A posted form, read as `T`; when it cannot be, the page it came from
/// says what is missing (see the module's note).
pub struct Form<T>(pub T);

/// The hidden field naming the page a form was posted from (a path of this
/// shop), so a failure can draw that page again.
pub const FROM: &str = "from";

/// Why a form could not be read, kept on the answer for [`error_pages`].
#[derive(Clone, Debug)]
pub(crate) struct FormFailed {
    /// The field that was missing or not understood, when one is known.
    pub field: Option<String>,
    /// The page the form was on, as its hidden [`FROM`] field said.
    pub from: Option<String>,
    /// The form's CSRF token as posted (empty when it had none): only a
    /// form of the visitor's own page has that page drawn again.
    pub csrf: String,
}

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawForm(bytes) = RawForm::from_request(req, state).await.map_err(|e| {
            let message = match e {
                RawFormRejection::InvalidFormContentType(_) => "This form was sent in a way the shop cannot read. Please go back, reload the page and try again.",
                _ => "That was more than this form can take. Please shorten what you typed and try again.",
            };
            PageError(StatusCode::BAD_REQUEST, message.into()).into_response()
        })?;
        let posted = |bytes: axum::body::Bytes| {
            Request::builder()
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(bytes))
                .unwrap_or_default()
        };
        let text = match axum::Form::<T>::from_request(posted(bytes.clone()), &()).await {
            Ok(axum::Form(value)) => return Ok(Form(value)),
            Err(e) => form_error_text(&e),
        };
        let (missing, field) = problem(&text);
        let pairs = axum::Form::<Vec<(String, String)>>::from_request(posted(bytes), &()).await.map(|f| f.0).unwrap_or_default();
        let from = pairs.iter().find(|(k, _)| k == FROM).map(|(_, v)| v.clone()).filter(|p| own_path(p));
        let csrf = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.clone()).unwrap_or_default();
        let mut response = PageError(StatusCode::UNPROCESSABLE_ENTITY, message_for(missing, field.as_deref())).into_response();
        response.extensions_mut().insert(FormFailed { field, from, csrf });
        Err(response)
    }
}

fn form_error_text(e: &FormRejection) -> String {
    match e {
        FormRejection::FailedToDeserializeFormBody(inner) => inner.body_text(),
        FormRejection::FailedToDeserializeForm(inner) => inner.body_text(),
        other => other.body_text(),
    }
}

/// From serde's account of a form (`missing field `sku``, `quantity:
/// invalid digit found in string`): whether a field was missing, and which.
fn problem(text: &str) -> (bool, Option<String>) {
    let name = |s: &str| Some(s.to_owned()).filter(|n| !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if let Some(rest) = text.split("missing field `").nth(1) {
        return (true, rest.split('`').next().and_then(name));
    }
    // `Failed to deserialize form body: quantity: invalid digit…`
    let mut parts = text.splitn(3, ": ");
    let (_, field) = (parts.next(), parts.next());
    (false, field.filter(|_| parts.next().is_some()).and_then(name))
}

/// A field as the message names it.
fn words_for(field: &str) -> String {
    match field {
        "sku" => "an option".into(),
        "quantity" => "the quantity".into(),
        "email" => "your email address".into(),
        "password" => "your password".into(),
        "csrf" => "the whole form".into(),
        other => format!("the {}", other.replace('_', " ")),
    }
}

fn message_for(missing: bool, field: Option<&str>) -> String {
    match (missing, field) {
        (true, Some(f)) => format!("Please fill in {} and send the form again.", words_for(f)),
        (false, Some(f)) => format!("Please check {}: it was not understood. Then send the form again.", words_for(f)),
        _ => "Some of this form was missing or not understood. Please check it and send it again.".into(),
    }
}

/// A path of this shop (never another site's address).
fn own_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 500 && !p.chars().any(char::is_control)
}

/// A query string read as `T`; one that cannot be is a page that says so.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(_) => {
                Err(PageError(StatusCode::BAD_REQUEST, "This address has something in it the shop does not understand. Please check it, or start again from the home page.".into()))
            }
        }
    }
}

/// Why an answer is an error page, kept on it for [`error_pages`].
#[derive(Clone, Debug)]
pub(crate) struct Failure(pub String);

/// Draws every error page with the shop's name; a form that failed on a
/// product page (its `from` field) draws that page again, the message at
/// the form — when it carries the visitor's CSRF token, so that a post
/// from anywhere else costs no look-ups of the product.
pub async fn error_pages(State(site): State<Site>, request: Request, next: Next) -> Response {
    // Only a posted form's failure draws its page again, with the visitor's cookies.
    let headers: Option<HeaderMap> = (request.method() == Method::POST).then(|| request.headers().clone());
    let response = next.run(request).await;
    let Some(Failure(message)) = response.extensions().get::<Failure>().cloned() else { return response };
    let failed = response.extensions().get::<FormFailed>().cloned();
    if let Some(FormFailed { field, from: Some(from), csrf }) = &failed
        && let Some(headers) = &headers
        && crate::session::csrf_ok(headers, csrf)
    {
        let message = if field.as_deref() == Some("sku") { None } else { Some(message.clone()) };
        if let Some(page) = page_again(&site, headers, from, response.status(), message).await {
            return page;
        }
    }
    let (mut parts, _) = response.into_parts();
    let back = failed.and_then(|f| f.from);
    let page = crate::pages::error_page(&site.name, &message, back.as_deref());
    parts.headers.remove(header::CONTENT_LENGTH);
    let (page_parts, body) = page.into_parts();
    if let Some(ct) = page_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// The page a form was posted from (its hidden [`FROM`] field), drawn again
/// with `message` at the form — `None` asks for the variant that was not
/// chosen ("Please choose a size"); `None` back when the page is not one
/// that can be drawn again (only product pages are), and the caller shows
/// its own.
pub(crate) async fn page_again(site: &Site, headers: &HeaderMap, from: &str, status: StatusCode, message: Option<String>) -> Option<Response> {
    let slug = from.strip_prefix("/products/").filter(|s| !s.is_empty() && !s.contains(['/', '?', '#', '%']))?;
    match crate::pages::product_again(site, headers, slug, status, message).await {
        Ok(page) => Some(page),
        Err(e) => {
            tracing::debug!(status = %e.0, "the product a form came from could not be drawn again");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_accounts_become_a_field() {
        assert_eq!(problem("Failed to deserialize form body: missing field `sku`"), (true, Some("sku".into())));
        assert_eq!(problem("Failed to deserialize form body: quantity: invalid digit found in string"), (false, Some("quantity".into())));
        assert_eq!(problem("Failed to deserialize form body: invalid type"), (false, None));
        assert_eq!(problem("Failed to deserialize form body: missing field `<b>`"), (true, None));
    }

    #[test]
    fn messages_are_for_people() {
        assert_eq!(message_for(true, Some("quantity")), "Please fill in the quantity and send the form again.");
        assert_eq!(message_for(false, Some("postal_code")), "Please check the postal code: it was not understood. Then send the form again.");
        assert!(!message_for(false, None).contains("deserialize"));
    }

    #[test]
    fn only_our_own_pages_are_gone_back_to() {
        assert!(own_path("/products/lamp"));
        for p in ["//evil.example", "https://evil.example/", "/\\evil", "lamp", "/a\nb"] {
            assert!(!own_path(p), "{p}");
        }
    }
}
