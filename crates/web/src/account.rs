//! Accounts in the storefront: sign up, sign in (with a TOTP code when the
//! account has one), sign out, the email-verification and password-reset
//! links the shop mails, and the account page with the order history. The
//! session is the API's own pair of tokens, in HttpOnly cookies; an expired
//! access token is renewed with the refresh token on the way.

use std::net::SocketAddr;

use askama::Template;
use crate::form::Form;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::api::{ApiError, encode};
use crate::pages::{DoneQuery, PageError, message_of, money, render};
use crate::session::{self, CART_ID, CART_SECRET};

pub const ACCESS: &str = "access";
pub const REFRESH: &str = "refresh";

pub(crate) fn client(ext: &Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// The browser's `X-Forwarded-For`, passed on with its connection so the API
/// finds the same client address (`platform::http::client_ip`) behind a proxy.
pub(crate) fn forwarded(headers: &HeaderMap) -> Vec<(&'static str, String)> {
    headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).map(|v| ("x-forwarded-for", v.to_owned())).collect()
}

fn append(mut response: Response, cookies: Vec<Option<HeaderValue>>) -> Response {
    for c in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

impl Site {
    fn session_cookies(&self, tokens: &Value) -> Vec<Option<HeaderValue>> {
        let secure = self.secure();
        vec![
            session::set_cookie(ACCESS, tokens["access_token"].as_str(), secure),
            session::set_cookie(REFRESH, tokens["refresh_token"].as_str(), secure),
        ]
    }

    fn signed_out_cookies(&self) -> Vec<Option<HeaderValue>> {
        let secure = self.secure();
        vec![session::set_cookie(ACCESS, None, secure), session::set_cookie(REFRESH, None, secure)]
    }

    /// `GET path` as the signed-in user: the answer, and the cookies of a
    /// renewed session when the access token had expired. `None` when
    /// nobody is signed in (or the session is over).
    pub(crate) async fn as_user(&self, headers: &HeaderMap, path: &str) -> Result<Option<(Value, Vec<Option<HeaderValue>>)>, ApiError> {
        let Some(access) = session::cookie(headers, ACCESS) else { return Ok(None) };
        let (status, body) = self.api.send_as(Method::GET, path, &[("authorization", format!("Bearer {access}"))], None).await?;
        if status.is_success() {
            return Ok(Some((body, Vec::new())));
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(ApiError::Status { status, body });
        }
        let Some(refresh) = session::cookie(headers, REFRESH) else { return Ok(None) };
        let (status, tokens) = self.api.send(Method::POST, "/api/v1/auth/refresh", Some(json!({"refresh_token": refresh}))).await?;
        if !status.is_success() {
            return Ok(None);
        }
        let access = tokens["access_token"].as_str().unwrap_or_default();
        let (status, body) = self.api.send_as(Method::GET, path, &[("authorization", format!("Bearer {access}"))], None).await?;
        if !status.is_success() {
            return Err(ApiError::Status { status, body });
        }
        Ok(Some((body, self.session_cookies(&tokens))))
    }

    /// Signs in with the API's tokens: sets the session's cookies and brings
    /// the guest cart along.
    async fn begin_session(&self, headers: &HeaderMap, tokens: &Value) -> Response {
        let access = tokens["access_token"].as_str().unwrap_or_default();
        let mut cookies = self.session_cookies(tokens);
        if let (Some(cart), Some(secret)) = (session::cookie(headers, CART_ID), session::cookie(headers, CART_SECRET)) {
            let claim = format!("/api/v1/carts/{}/claim", encode(&cart));
            let h = [("authorization", format!("Bearer {access}")), ("x-cart-secret", secret)];
            match self.api.send_as(Method::POST, &claim, &h, None).await {
                // From now on the cart is the customer's, reached with their token.
                Ok((status, claimed)) if status.is_success() => {
                    let secure = self.secure();
                    cookies.push(session::set_cookie(CART_ID, claimed["id"].as_str(), secure));
                    cookies.push(session::set_cookie(CART_SECRET, None, secure));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not bring a guest cart to the account"),
            }
        }
        // Staff go to the console (the page they asked for, if any); customers to their account.
        let (to, forget) = crate::admin::landing(self, headers, access).await;
        cookies.push(forget);
        append(Redirect::to(&to).into_response(), cookies)
    }
}

/// Seconds until an access token expires, read from its claims (not
/// verified here: the API verifies it; this only decides when to renew).
fn seconds_left(token: &str) -> Option<i64> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes).ok()?.get("exp")?.as_i64()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(exp - now)
}

/// Before any page: an access token about to expire is renewed with the
/// refresh token (the page then sees the new one), or, when the session is
/// over, both cookies go.
pub async fn renew_session(State(site): State<Site>, mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let stale = session::cookie(headers, ACCESS).is_some_and(|t| seconds_left(&t).is_none_or(|left| left < 30));
    let refresh = session::cookie(headers, REFRESH);
    let access_gone = session::cookie(headers, ACCESS).is_none() && refresh.is_some();
    if !(stale || access_gone) {
        return next.run(request).await;
    }
    let renewed = match &refresh {
        Some(r) => match site.api.send(Method::POST, "/api/v1/auth/refresh", Some(json!({"refresh_token": r}))).await {
            Ok((status, tokens)) if status.is_success() => Some(tokens),
            _ => None,
        },
        None => None,
    };
    // The pages of this request read the renewed tokens (or none).
    let token = |name: &str| renewed.as_ref().map(|t| t[name].as_str().unwrap_or_default().to_owned());
    let (access, refresh) = (token("access_token"), token("refresh_token"));
    crate::set_request_cookie(&mut request, ACCESS, access.as_deref());
    crate::set_request_cookie(&mut request, REFRESH, refresh.as_deref());
    let response = next.run(request).await;
    match &renewed {
        Some(tokens) => append(response, site.session_cookies(tokens)),
        None => append(response, site.signed_out_cookies()),
    }
}

// Sign up and sign in

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    sign_up: bool,
    email: String,
    name: String,
    totp: bool,
    message: String,
    notice: bool,
}

/// What the sign-in or sign-up form shows again: what was typed, and why it
/// did not work (or, with `notice`, what to do next).
#[derive(Default)]
struct Typed {
    sign_up: bool,
    email: String,
    name: String,
    totp: bool,
    message: String,
    notice: bool,
}

fn sign_in_page(site: &Site, headers: &HeaderMap, status: StatusCode, t: Typed) -> Response {
    let (csrf, set) = session::csrf(headers, site.secure());
    let page = SignIn { shop: &site.name, query: "", csrf, sign_up: t.sign_up, email: t.email, name: t.name, totp: t.totp, message: t.message, notice: t.notice };
    append((status, render(&page)).into_response(), vec![set])
}

pub async fn sign_in_form(State(site): State<Site>, headers: HeaderMap) -> Response {
    sign_in_page(&site, &headers, StatusCode::OK, Typed::default())
}

pub async fn sign_up_form(State(site): State<Site>, headers: HeaderMap) -> Response {
    sign_in_page(&site, &headers, StatusCode::OK, Typed { sign_up: true, ..Typed::default() })
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    totp_code: String,
}

pub async fn sign_in(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<SignInForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let code = Some(f.totp_code.trim().to_owned()).filter(|c| !c.is_empty());
    let body = json!({"email": f.email, "password": f.password, "totp_code": code});
    let (status, tokens) = site.api.send_from(client(&ext), Method::POST, "/api/v1/auth/login", &forwarded(&headers), Some(body)).await?;
    if status.is_success() {
        return Ok(site.begin_session(&headers, &tokens).await);
    }
    let totp = tokens["error"]["code"] == "mfa_required" || code.is_some();
    let message = if tokens["error"]["code"] == "mfa_required" && code.is_none() {
        "Enter the code from your authenticator app.".to_owned()
    } else {
        message_of(&tokens)
    };
    let status = if status == StatusCode::TOO_MANY_REQUESTS { status } else { StatusCode::UNAUTHORIZED };
    Ok(sign_in_page(&site, &headers, status, Typed { email: f.email, totp, message, ..Typed::default() }))
}

#[derive(Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    csrf: String,
    name: String,
    email: String,
    password: String,
}

pub async fn sign_up(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<SignUpForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let body = json!({"email": f.email, "password": f.password, "name": f.name});
    let (status, answer) = site.api.send_from(client(&ext), Method::POST, "/api/v1/auth/register", &forwarded(&headers), Some(body)).await?;
    if !status.is_success() {
        let typed = Typed { sign_up: true, email: f.email, name: f.name, message: message_of(&answer), ..Typed::default() };
        return Ok(sign_in_page(&site, &headers, StatusCode::UNPROCESSABLE_ENTITY, typed));
    }
    // Never signed in here: a new address and one with an account (whose
    // owner the API mails instead) must get the same page, so both wait for
    // the mailed link and then sign in.
    let message = format!("We have sent a message to {}: follow it to confirm your address, then sign in.", f.email.trim());
    Ok(sign_in_page(&site, &headers, StatusCode::OK, Typed { email: f.email, message, notice: true, ..Typed::default() }))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(State(site): State<Site>, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    if let Some(refresh) = session::cookie(&headers, REFRESH) {
        site.api.send(Method::POST, "/api/v1/auth/logout", Some(json!({"refresh_token": refresh}))).await?;
    }
    Ok(append(Redirect::to("/").into_response(), site.signed_out_cookies()))
}

// The account page

#[derive(Debug, Deserialize)]
struct Me {
    name: String,
    email: String,
    email_verified: bool,
    mfa_enabled: bool,
}

#[derive(Debug, Deserialize)]
struct Total {
    amount: i64,
    currency: String,
}

#[derive(Debug, Deserialize)]
struct Summary {
    id: String,
    number: i64,
    status: String,
    total: Total,
    placed_at: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    name: String,
    email: String,
    verified: bool,
    mfa: bool,
    orders: Vec<(String, i64, String, String, String)>,
    /// What came of a change of email (`?email=`), in our words.
    email_notice: &'static str,
    email_ok: bool,
}

#[derive(Deserialize)]
pub struct AccountQuery {
    email: Option<String>,
}

/// The account page's words for what `PATCH /api/v1/me` answered a change of email.
fn email_notice(code: Option<&str>) -> (&'static str, bool) {
    match code {
        Some("sent") => ("To finish, follow the link we have sent to the new address. Until then your address stays as it is.", true),
        Some("password_required" | "wrong_password") => ("That is not your current password; your address is unchanged.", false),
        Some(_) => ("That address could not be used; please check it and try again.", false),
        None => ("", true),
    }
}

pub async fn account(State(site): State<Site>, headers: HeaderMap, Query(q): Query<AccountQuery>) -> Result<Response, PageError> {
    let Some((me, mut cookies)) = site.as_user(&headers, "/api/v1/me").await? else {
        return Ok(append(Redirect::to("/account/sign-in").into_response(), site.signed_out_cookies()));
    };
    let me: Me = serde_json::from_value(me).map_err(|e| PageError::from(ApiError::Shape { path: "/api/v1/me".into(), reason: e.to_string() }))?;
    // The renewed token (if any) is in the cookies just set; use it for the second call.
    let renewed = cookies.iter().flatten().find_map(|c| c.to_str().ok()?.strip_prefix("access=")?.split(';').next().map(str::to_owned));
    let mut with_renewed = headers.clone();
    if let Some(token) = renewed
        && let Ok(v) = HeaderValue::from_str(&format!("{ACCESS}={token}"))
    {
        with_renewed.insert(header::COOKIE, v);
    }
    let orders = match site.as_user(&with_renewed, "/api/v1/orders?limit=50").await? {
        Some((page, more)) => {
            cookies.extend(more);
            let list: Vec<Summary> = serde_json::from_value(page["data"].clone()).unwrap_or_default();
            list.into_iter()
                .map(|o| (format!("/orders/{}", encode(&o.id)), o.number, o.status.replace('_', " "), money(o.total.amount, &o.total.currency), o.placed_at.chars().take(10).collect()))
                .collect()
        }
        None => Vec::new(),
    };
    let (csrf, set) = session::csrf(&headers, site.secure());
    cookies.push(set);
    let (email_notice, email_ok) = email_notice(q.email.as_deref());
    let page = AccountPage { shop: &site.name, query: "", csrf, name: me.name, email: me.email, verified: me.email_verified, mfa: me.mfa_enabled, orders, email_notice, email_ok };
    let mut response = render(&page);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(append(response, cookies))
}

#[derive(Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    csrf: String,
    email: String,
    #[serde(default)]
    password: String,
}

/// Asks for a change of email (the current password confirms it); the
/// change waits for the link mailed to the new address.
pub async fn change_email(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<EmailForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let body = json!({"email": f.email.trim(), "password": f.password});
    let Some((status, answer)) = site.user_call(&headers, &ext, Method::PATCH, "/api/v1/me", Some(body)).await? else { return Ok(to_sign_in()) };
    let outcome = if status.is_success() {
        "sent"
    } else {
        match answer["error"]["code"].as_str() {
            Some("password_required") => "password_required",
            Some("wrong_password") => "wrong_password",
            _ => "invalid",
        }
    };
    Ok(Redirect::to(&format!("/account?email={outcome}")).into_response())
}

// The links the shop mails

#[derive(Template)]
#[template(path = "token_form.html")]
struct TokenPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    heading: &'a str,
    action: &'a str,
    token: String,
    password: bool,
    button: &'a str,
    message: String,
    done: bool,
    /// When done: a link to the account for a session, to sign in otherwise.
    signed_in: bool,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn token_page(site: &Site, headers: &HeaderMap, verify: bool, token: String, status: StatusCode, message: String, done: bool) -> Response {
    let (csrf, set) = session::csrf(headers, site.secure());
    let signed_in = session::cookie(headers, ACCESS).is_some();
    let page = if verify {
        TokenPage { shop: &site.name, query: "", csrf, heading: "Confirm your email address", action: "/account/verify-email", token, password: false, button: "Confirm my address", message, done, signed_in }
    } else {
        TokenPage { shop: &site.name, query: "", csrf, heading: "Choose a new password", action: "/account/reset-password", token, password: true, button: "Set my password", message, done, signed_in }
    };
    append((status, render(&page)).into_response(), vec![set])
}

pub async fn verify_form(State(site): State<Site>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    token_page(&site, &headers, true, q.token, StatusCode::OK, String::new(), false)
}

pub async fn reset_form(State(site): State<Site>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    token_page(&site, &headers, false, q.token, StatusCode::OK, String::new(), false)
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    token: String,
    #[serde(default)]
    password: String,
}

pub async fn verify(State(site): State<Site>, headers: HeaderMap, Form(f): Form<TokenForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let (status, body) = site.api.send(Method::POST, "/api/v1/auth/verify-email", Some(json!({"token": f.token}))).await?;
    Ok(if status.is_success() {
        token_page(&site, &headers, true, String::new(), StatusCode::OK, "Your email address is confirmed.".into(), true)
    } else {
        token_page(&site, &headers, true, f.token, StatusCode::UNPROCESSABLE_ENTITY, message_of(&body), false)
    })
}

pub async fn reset(State(site): State<Site>, headers: HeaderMap, Form(f): Form<TokenForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let (status, body) = site.api.send(Method::POST, "/api/v1/auth/password/reset", Some(json!({"token": f.token, "password": f.password}))).await?;
    Ok(if status.is_success() {
        token_page(&site, &headers, false, String::new(), StatusCode::OK, "Your password is changed. You can sign in with it now.".into(), true)
    } else {
        token_page(&site, &headers, false, f.token, StatusCode::UNPROCESSABLE_ENTITY, message_of(&body), false)
    })
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    sent: bool,
}

pub async fn forgot_form(State(site): State<Site>, headers: HeaderMap) -> Response {
    let (csrf, set) = session::csrf(&headers, site.secure());
    append(render(&ForgotPage { shop: &site.name, query: "", csrf, sent: false }), vec![set])
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf: String,
    email: String,
}

pub async fn forgot(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<ForgotForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    // The same answer whether or not the address has an account.
    site.api.send_from(client(&ext), Method::POST, "/api/v1/auth/password/forgot", &forwarded(&headers), Some(json!({"email": f.email}))).await?;
    Ok(render(&ForgotPage { shop: &site.name, query: "", csrf: f.csrf, sent: true }))
}

// Two-step sign-in (TOTP)

impl Site {
    /// A call as the signed-in user (the session middleware keeps the token
    /// fresh), on behalf of the browser: the API's per-client counts (the
    /// password a step-up checks) count its address, not one shared client.
    /// A refusal to wait (429) is the page's answer too.
    pub(crate) async fn user_call(&self, headers: &HeaderMap, ext: &Extensions, method: Method, path: &str, body: Option<Value>) -> Result<Option<(StatusCode, Value)>, ApiError> {
        let Some(access) = session::cookie(headers, ACCESS) else { return Ok(None) };
        let mut sent = forwarded(headers);
        sent.push(("authorization", format!("Bearer {access}")));
        let (status, body) = self.api.send_from(client(ext), method, path, &sent, body).await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ApiError::Status { status, body });
        }
        Ok(Some((status, body)))
    }
}

/// The `otpauth://` address as a QR code, an SVG drawn here (no request leaves the shop).
fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot draw a QR code");
            String::new()
        }
    }
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    enabled: bool,
    qr: String,
    secret: String,
    recovery_codes: Vec<String>,
    message: String,
}

impl<'a> SecurityPage<'a> {
    fn new(site: &'a Site, csrf: String, enabled: bool) -> Self {
        SecurityPage { shop: &site.name, query: "", csrf, enabled, qr: String::new(), secret: String::new(), recovery_codes: Vec::new(), message: String::new() }
    }
}

fn to_sign_in() -> Response {
    Redirect::to("/account/sign-in").into_response()
}

pub async fn security(State(site): State<Site>, headers: HeaderMap, ext: Extensions) -> Result<Response, PageError> {
    let Some((StatusCode::OK, me)) = site.user_call(&headers, &ext, Method::GET, "/api/v1/me", None).await? else { return Ok(to_sign_in()) };
    let (csrf, set) = session::csrf(&headers, site.secure());
    let page = SecurityPage::new(&site, csrf, me["mfa_enabled"].as_bool().unwrap_or(false));
    Ok(append(render(&page), vec![set]))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

/// Starts enrolment (the current password confirms it): the QR code and the
/// secret to type, and a field for the first code.
pub async fn mfa_start(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<PasswordForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let body = json!({"password": f.password});
    let Some((status, body)) = site.user_call(&headers, &ext, Method::POST, "/api/v1/me/mfa/totp", Some(body)).await? else { return Ok(to_sign_in()) };
    let mut page = SecurityPage::new(&site, f.csrf, false);
    if status.is_success() {
        page.qr = qr_svg(body["otpauth_uri"].as_str().unwrap_or_default());
        page.secret = body["secret"].as_str().unwrap_or_default().to_owned();
        return Ok(render(&page));
    }
    page.message = message_of(&body);
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
}

/// Turns TOTP on with a first code; shows the recovery codes, once.
pub async fn mfa_confirm(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<CodeForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let body = json!({"code": f.code.trim()});
    let Some((status, answer)) = site.user_call(&headers, &ext, Method::POST, "/api/v1/me/mfa/totp/confirm", Some(body)).await? else { return Ok(to_sign_in()) };
    if status.is_success() {
        let mut page = SecurityPage::new(&site, f.csrf, true);
        page.recovery_codes = answer["recovery_codes"].as_array().map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()).unwrap_or_default();
        page.message = "Two-step sign-in is on.".into();
        return Ok(render(&page));
    }
    let mut page = SecurityPage::new(&site, f.csrf, false);
    page.message = message_of(&answer);
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

// Preferences, export, deletion

#[derive(Template)]
#[template(path = "preferences.html")]
struct PreferencesPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    order_sms: bool,
    phone: String,
    marketing_email: bool,
    message: String,
    saved: bool,
}

fn preferences_page(site: &Site, headers: &HeaderMap, prefs: &Value, status: StatusCode, message: String, saved: bool) -> Response {
    let (csrf, set) = session::csrf(headers, site.secure());
    let page = PreferencesPage {
        shop: &site.name,
        query: "",
        csrf,
        order_sms: prefs["order_sms"].as_bool().unwrap_or(false),
        phone: prefs["phone"].as_str().unwrap_or_default().to_owned(),
        marketing_email: prefs["marketing_email"].as_bool().unwrap_or(false),
        message,
        saved,
    };
    append((status, render(&page)).into_response(), vec![set])
}

pub async fn preferences(State(site): State<Site>, headers: HeaderMap, ext: Extensions) -> Result<Response, PageError> {
    match site.user_call(&headers, &ext, Method::GET, "/api/v1/me/notification-preferences", None).await? {
        Some((status, prefs)) if status.is_success() => Ok(preferences_page(&site, &headers, &prefs, StatusCode::OK, String::new(), false)),
        Some((status, body)) if status != StatusCode::UNAUTHORIZED => Err(ApiError::Status { status, body }.into()),
        _ => Ok(to_sign_in()),
    }
}

#[derive(Deserialize)]
pub struct PreferencesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    order_sms: Option<String>,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    marketing_email: Option<String>,
}

pub async fn save_preferences(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<PreferencesForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let phone = Some(f.phone.trim().to_owned()).filter(|p| !p.is_empty());
    let body = json!({"order_sms": f.order_sms.is_some(), "phone": phone, "marketing_email": f.marketing_email.is_some()});
    let Some((status, answer)) = site.user_call(&headers, &ext, Method::PUT, "/api/v1/me/notification-preferences", Some(body.clone())).await? else { return Ok(to_sign_in()) };
    if status.is_success() {
        return Ok(preferences_page(&site, &headers, &answer, StatusCode::OK, "Saved.".into(), true));
    }
    Ok(preferences_page(&site, &headers, &body, StatusCode::UNPROCESSABLE_ENTITY, message_of(&answer), false))
}

/// The account's data, as the API exports it, for download.
pub async fn export(State(site): State<Site>, headers: HeaderMap, ext: Extensions) -> Result<Response, PageError> {
    let Some((status, data)) = site.user_call(&headers, &ext, Method::GET, "/api/v1/me/export", None).await? else { return Ok(to_sign_in()) };
    if !status.is_success() {
        return Err(ApiError::Status { status, body: data }.into());
    }
    let body = serde_json::to_string_pretty(&data).unwrap_or_default();
    Ok((
        [(header::CONTENT_TYPE, "application/json; charset=utf-8"), (header::CONTENT_DISPOSITION, "attachment; filename=\"my-data.json\""), (header::CACHE_CONTROL, "no-store")],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    password: String,
}

/// Deletes the account (the password confirms it) and signs out.
pub async fn delete(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(f): Form<DeleteForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some((status, answer)) = site.user_call(&headers, &ext, Method::DELETE, "/api/v1/me", Some(json!({"password": f.password}))).await? else { return Ok(to_sign_in()) };
    if !status.is_success() {
        return Err(PageError(StatusCode::UNPROCESSABLE_ENTITY, message_of(&answer)));
    }
    let page = TokenPage {
        shop: &site.name, query: "", csrf: f.csrf, heading: "Your account is deleted", action: "", token: String::new(),
        password: false, button: "", message: "Your account and its personal data are gone.".into(), done: true,
        signed_in: false,
    };
    Ok(append(render(&page), site.signed_out_cookies()))
}

// Addresses

/// An address as the API keeps it, and as the address form
/// (`address_fields.html`, in the account and at checkout) shows it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AddressFields {
    #[serde(default)]
    id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) line1: String,
    #[serde(default)]
    line2: Option<String>,
    #[serde(default)]
    pub(crate) city: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    pub(crate) postal_code: String,
    #[serde(default)]
    pub(crate) country: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    default_shipping: bool,
}

impl AddressFields {
    /// The address on one line (without the phone).
    pub(crate) fn line(&self) -> String {
        let mut parts = vec![self.name.as_str(), self.line1.as_str()];
        parts.extend(self.line2.as_deref().filter(|l| !l.is_empty()));
        parts.push(self.city.as_str());
        parts.extend(self.region.as_deref().filter(|r| !r.is_empty()));
        parts.push(self.postal_code.as_str());
        parts.push(self.country.as_str());
        parts.join(", ")
    }

    pub(crate) fn line2(&self) -> &str {
        self.line2.as_deref().unwrap_or_default()
    }

    pub(crate) fn region(&self) -> &str {
        self.region.as_deref().unwrap_or_default()
    }

    pub(crate) fn phone(&self) -> &str {
        self.phone.as_deref().unwrap_or_default()
    }

    /// The address as the API takes it: empty optional fields are cleared.
    pub(crate) fn address(&self) -> Value {
        let some = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        json!({"name": self.name, "line1": self.line1, "line2": some(self.line2()), "city": self.city, "region": some(self.region()),
               "postal_code": self.postal_code, "country": self.country.trim().to_uppercase(), "phone": some(self.phone())})
    }

    /// The body of a create or update call of a saved address.
    fn body(&self) -> Value {
        let mut body = self.address();
        body["default_shipping"] = json!(self.default_shipping);
        body["default_billing"] = json!(self.default_shipping);
        body
    }
}

#[derive(Template)]
#[template(path = "addresses.html")]
struct AddressesPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    addresses: Vec<AddressFields>,
    /// The address being edited (its page), or the new one being added.
    form: AddressFields,
    editing: bool,
    message: String,
    done: &'static str,
}

/// What the list says after a change.
fn address_done(done: &str) -> &'static str {
    match done {
        "added" => "The address is saved.",
        "saved" => "The address is changed.",
        "default" => "That address is now your default.",
        "removed" => "The address is removed.",
        _ => "",
    }
}

/// The list and the form: `edit`'s fields, or those typed when `refused` (with the refusal's status and message).
async fn addresses_page(site: &Site, headers: &HeaderMap, ext: &Extensions, edit: Option<&str>, refused: Option<(AddressFields, StatusCode, String)>, done: &'static str) -> Result<Response, PageError> {
    let Some((listed, list)) = site.user_call(headers, ext, Method::GET, "/api/v1/me/addresses", None).await? else { return Ok(to_sign_in()) };
    if listed == StatusCode::UNAUTHORIZED {
        return Ok(to_sign_in());
    }
    if !listed.is_success() {
        return Err(ApiError::Status { status: listed, body: list }.into());
    }
    let data = list.get("data").cloned().unwrap_or(list);
    let addresses: Vec<AddressFields> = serde_json::from_value(data).map_err(|e| PageError::from(ApiError::Shape { path: "/api/v1/me/addresses".into(), reason: e.to_string() }))?;
    let (form, status, message) = match (refused, edit) {
        (Some(typed), _) => typed,
        (None, Some(id)) => {
            let found = addresses.iter().find(|a| a.id == id).cloned().ok_or_else(|| PageError(StatusCode::NOT_FOUND, "There is no such address.".into()))?;
            (found, StatusCode::OK, String::new())
        }
        (None, None) => (AddressFields { default_shipping: addresses.is_empty(), ..Default::default() }, StatusCode::OK, String::new()),
    };
    let (csrf, set) = session::csrf(headers, site.secure());
    let page = AddressesPage { shop: &site.name, query: "", csrf, addresses, form, editing: edit.is_some(), message, done };
    let mut response = (status, render(&page)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(append(response, vec![set]))
}

pub async fn addresses(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Query(q): Query<DoneQuery>) -> Result<Response, PageError> {
    addresses_page(&site, &headers, &ext, None, None, address_done(&q.done)).await
}

pub async fn address(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Path(id): Path<String>) -> Result<Response, PageError> {
    addresses_page(&site, &headers, &ext, Some(&id), None, "").await
}

#[derive(Deserialize)]
pub struct AddressPost {
    #[serde(default)]
    csrf: String,
    /// `delete` or `default`; a change of the fields otherwise.
    #[serde(default)]
    action: String,
    #[serde(flatten)]
    fields: AddressFields,
    /// A checkbox: present when ticked.
    #[serde(default)]
    make_default: Option<String>,
}

/// Adds an address (`id` empty) or changes, makes default or removes one.
async fn change_address(site: &Site, headers: &HeaderMap, ext: &Extensions, id: Option<&str>, post: AddressPost) -> Result<Response, PageError> {
    if !session::csrf_ok(headers, &post.csrf) {
        return Err(PageError::expired_form());
    }
    let mut fields = post.fields;
    fields.default_shipping = post.make_default.is_some();
    let (method, path, body, done) = match (id, post.action.as_str()) {
        (None, _) => (Method::POST, "/api/v1/me/addresses".to_owned(), Some(fields.body()), "added"),
        (Some(id), "delete") => (Method::DELETE, format!("/api/v1/me/addresses/{}", encode(id)), None, "removed"),
        (Some(id), "default") => (Method::PATCH, format!("/api/v1/me/addresses/{}", encode(id)), Some(json!({"default_shipping": true, "default_billing": true})), "default"),
        (Some(id), _) => (Method::PATCH, format!("/api/v1/me/addresses/{}", encode(id)), Some(fields.body()), "saved"),
    };
    let Some((status, answer)) = site.user_call(headers, ext, method, &path, body).await? else { return Ok(to_sign_in()) };
    if status.is_success() {
        return Ok(Redirect::to(&format!("/account/addresses?done={done}")).into_response());
    }
    if status == StatusCode::UNAUTHORIZED {
        return Ok(to_sign_in());
    }
    let status = if status == StatusCode::NOT_FOUND { status } else { StatusCode::UNPROCESSABLE_ENTITY };
    fields.id = id.unwrap_or_default().to_owned();
    addresses_page(site, headers, ext, id, Some((fields, status, message_of(&answer))), "").await
}

pub async fn add_address(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Form(post): Form<AddressPost>) -> Result<Response, PageError> {
    change_address(&site, &headers, &ext, None, post).await
}

pub async fn update_address(State(site): State<Site>, headers: HeaderMap, ext: Extensions, Path(id): Path<String>, Form(post): Form<AddressPost>) -> Result<Response, PageError> {
    change_address(&site, &headers, &ext, Some(&id), post).await
}
