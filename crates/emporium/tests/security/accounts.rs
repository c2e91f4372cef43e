//! Accounts: a stolen access token is not enough to take an account over
//! (step-up for email and TOTP changes), and sign-up and email change say
//! nothing about which addresses have accounts.

use axum::http::StatusCode;
use kernel::auth::Role;
use serde_json::{Value, json};

use super::support::pages::{Browser, between, mail_link};
use super::support::{Shop, Who};

const PASSWORD: &str = "a long passphrase";

async fn shop_with_mail() -> Shop {
    Shop::with(|c| c.services.push("notify".into())).await
}

fn bearer(token: &str) -> Who {
    Who { token: Some(token.to_owned()), ..Who::default() }
}

/// Registers through the API and signs in: the access token.
async fn customer(shop: &Shop, email: &str) -> String {
    let (s, body) = shop.send("POST", "/api/v1/auth/register", &Who::default(), Some(json!({"email": email, "password": PASSWORD, "name": "Ada"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, tokens) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": email, "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// The dev mailbox's messages to `to` whose subject contains `subject`, once at least `at_least` arrived.
async fn mails(shop: &Shop, to: &str, subject: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (_, mail) = shop.send("GET", &format!("/api/v1/admin/mailbox?to={to}"), &shop.as_staff(), None).await;
        let found: Vec<Value> = mail["data"].as_array().unwrap().iter().filter(|m| m["subject"].as_str().unwrap_or("").contains(subject)).cloned().collect();
        if found.len() >= at_least {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {at_least} mails to {to} about {subject}");
}

fn error(body: &Value) -> (Option<&str>, Option<&str>) {
    (body["error"]["code"].as_str(), body["error"]["field"].as_str())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn item_7_a_stolen_access_token_cannot_take_the_account_over() {
    let shop = shop_with_mail().await;
    let token = customer(&shop, "ada@example.com").await;
    let ada = bearer(&token);

    // Moving the account to the thief's mailbox needs the password.
    let (s, e) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "thief@example.com"}))).await;
    assert_eq!((s, error(&e)), (StatusCode::FORBIDDEN, (Some("password_required"), Some("password"))), "{e}");
    let (s, e) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "thief@example.com", "password": "a guess at it"}))).await;
    assert_eq!((s, error(&e)), (StatusCode::FORBIDDEN, (Some("wrong_password"), Some("password"))), "{e}");
    let (_, me) = shop.send("GET", "/api/v1/me", &ada, None).await;
    assert_eq!(me["email"], "ada@example.com");

    // So does putting the thief's phone on it, and taking it off.
    let (s, e) = shop.send("POST", "/api/v1/me/mfa/totp", &ada, None).await;
    assert_eq!((s, error(&e)), (StatusCode::FORBIDDEN, (Some("password_required"), Some("password"))), "{e}");
    let (s, e) = shop.send("POST", "/api/v1/me/mfa/totp", &ada, Some(json!({"password": "a guess at it"}))).await;
    assert_eq!((s, error(&e)), (StatusCode::FORBIDDEN, (Some("wrong_password"), Some("password"))), "{e}");
    let (s, enrolment) = shop.send("POST", "/api/v1/me/mfa/totp", &ada, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK, "{enrolment}");
    let code = platform::testing::totp(enrolment["secret"].as_str().unwrap(), now() - 30);
    let (s, _) = shop.send("POST", "/api/v1/me/mfa/totp/confirm", &ada, Some(json!({"code": code}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = shop.send("DELETE", "/api/v1/me/mfa/totp", &ada, Some(json!({"password": "a guess at it"}))).await;
    assert_eq!((s, error(&e).0), (StatusCode::FORBIDDEN, Some("wrong_password")));

    // With the password, the change waits for the link mailed to the new
    // address; once used, the old address hears of it.
    let (s, me) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "ada@new.example", "password": PASSWORD}))).await;
    assert_eq!((s, me["email"].as_str()), (StatusCode::OK, Some("ada@example.com")), "{me}");
    let link = mail_link(&shop, "ada@new.example", "Confirm your email", "/account/verify-email?token=").await;
    let token_in_link = link.split("token=").nth(1).unwrap();
    let (s, _) = shop.send("POST", "/api/v1/auth/verify-email", &Who::default(), Some(json!({"token": token_in_link}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, me) = shop.send("GET", "/api/v1/me", &ada, None).await;
    assert_eq!((me["email"].as_str(), me["email_verified"].as_bool()), (Some("ada@new.example"), Some(true)));
    let notice = mails(&shop, "ada@example.com", "email address was changed", 1).await;
    assert!(notice[0]["text"].as_str().unwrap().contains("ada@new.example"), "{}", notice[0]);

    // Staff who manage staff can turn a lost phone off; others cannot; it is audited.
    let ada_id = me["id"].as_str().unwrap().to_owned();
    let orders = bearer(&shop.user("orders@example.com", Role::OrderManager).await);
    let path = format!("/api/v1/admin/users/{ada_id}/mfa");
    assert_eq!(shop.send("DELETE", &path, &orders, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(shop.send("DELETE", &path, &ada, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(shop.send("GET", "/api/v1/me", &ada, None).await.1["mfa_enabled"], true);
    assert_eq!(shop.send("DELETE", &path, &shop.as_staff(), None).await.0, StatusCode::NO_CONTENT);
    // (The reset also signs ada's tokens out: what she may do can hang on MFA.)
    assert_eq!(shop.send("GET", &format!("/api/v1/admin/users/{ada_id}"), &shop.as_staff(), None).await.1["mfa_enabled"], false);
    let (_, audit) = shop.send("GET", "/api/v1/admin/audit", &shop.as_staff(), None).await;
    assert!(audit["data"].as_array().unwrap().iter().any(|a| a["action"] == "mfa_reset" && a["subject_id"] == ada_id.as_str()), "{audit}");
    let (_, admin) = shop.send("GET", "/api/v1/me", &shop.as_staff(), None).await;
    let own = format!("/api/v1/admin/users/{}/mfa", admin["id"].as_str().unwrap());
    assert_eq!(shop.send("DELETE", &own, &shop.as_staff(), None).await.0, StatusCode::CONFLICT, "not on oneself: that takes the password");

    // The account pages ask for the password and send it.
    let mut browser = Browser::new(&shop);
    let (_, form) = browser.get("/account/sign-in").await;
    let (s, account) = browser.submit(&form, "/account/sign-in", &[("email", "ada@new.example"), ("password", PASSWORD)]).await;
    assert_eq!(s, StatusCode::OK, "{account}");
    assert!(account.contains(r#"id="email-password""#), "{account}");
    let (_, wrong) = browser.submit(&account, "/account/email", &[("email", "ada@third.example"), ("password", "a guess at it")]).await;
    assert!(wrong.contains("not your current password") && wrong.contains("ada@new.example"), "{wrong}");
    let (_, sent) = browser.submit(&account, "/account/email", &[("email", "ada@third.example"), ("password", PASSWORD)]).await;
    assert!(sent.contains("follow the link we have sent to the new address"), "{sent}");
    mail_link(&shop, "ada@third.example", "Confirm your email", "/account/verify-email?token=").await;
    let (_, security) = browser.get("/account/security").await;
    let (s, refused) = browser.submit(&security, "/account/security/totp", &[("password", "a guess at it")]).await;
    assert!(s == StatusCode::UNPROCESSABLE_ENTITY && !refused.contains(r#"<code class="secret">"#), "{refused}");
    let (_, enrol) = browser.submit(&security, "/account/security/totp", &[("password", PASSWORD)]).await;
    assert!(enrol.contains(r#"<code class="secret">"#), "{enrol}");
}

#[tokio::test]
async fn item_14_sign_up_and_email_change_do_not_say_which_addresses_have_accounts() {
    let shop = shop_with_mail().await;
    customer(&shop, "grace@example.com").await;

    // Signing up with a known address is answered like a new one.
    let anyone = Who::default();
    let register = |email: &'static str| {
        shop.send("POST", "/api/v1/auth/register", &anyone, Some(json!({"email": email, "password": "another passphrase", "name": "Mallory"})))
    };
    let (new_status, new) = register("mallory@example.com").await;
    let (taken_status, taken) = register("GRACE@example.com").await;
    assert_eq!((new_status, taken_status), (StatusCode::CREATED, StatusCode::CREATED), "{taken}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&new), keys(&taken));
    for field in ["email_verified", "name", "roles", "mfa_enabled", "disabled"] {
        assert_eq!(new[field], taken[field], "{field}");
    }
    assert_eq!(taken["email"], "grace@example.com");
    assert!(taken["id"].as_str().unwrap().starts_with("usr_"));
    // The owner is told; the account is untouched.
    let warned = mails(&shop, "grace@example.com", "Someone tried to use your email address", 1).await;
    assert!(warned[0]["text"].as_str().unwrap().contains("create an account"), "{}", warned[0]);
    let login = |password: &'static str| shop.send("POST", "/api/v1/auth/login", &anyone, Some(json!({"email": "grace@example.com", "password": password})));
    assert_eq!(login(PASSWORD).await.0, StatusCode::OK);
    assert_eq!(login("another passphrase").await.0, StatusCode::UNAUTHORIZED);

    // Changing to a free address and to a taken one answer the same.
    let lin = bearer(&customer(&shop, "lin@example.com").await);
    let (free_status, free) = shop.send("PATCH", "/api/v1/me", &lin, Some(json!({"email": "lin@new.example", "password": PASSWORD}))).await;
    let (taken_status, taken) = shop.send("PATCH", "/api/v1/me", &lin, Some(json!({"email": "grace@example.com", "password": PASSWORD}))).await;
    assert_eq!((free_status, &free), (taken_status, &taken));
    assert_eq!(free_status, StatusCode::OK);
    // The free address gets the link; the taken one's owner a warning, and no link.
    mail_link(&shop, "lin@new.example", "Confirm your email", "/account/verify-email?token=").await;
    let warned = mails(&shop, "grace@example.com", "Someone tried to use your email address", 2).await;
    assert!(warned.iter().any(|m| m["text"].as_str().unwrap().contains("move another account")), "{warned:?}");
    assert_eq!(mails(&shop, "grace@example.com", "Confirm your email", 1).await.len(), 1, "only her own sign-up's");
    let (_, me) = shop.send("GET", "/api/v1/me", &lin, None).await;
    assert_eq!(me["email"], "lin@example.com");
}

/// Signs up through the storefront's form from a fresh browser: the status,
/// the cookies set (names) and the page with `email` and the form token masked.
async fn storefront_sign_up(shop: &Shop, email: &str) -> (StatusCode, Vec<String>, String) {
    let mut browser = Browser::new(shop);
    let (_, form) = browser.get("/account/sign-up").await;
    let csrf = between(&form, r#"name="csrf" value=""#, "\"").to_owned();
    let fields = [("csrf", csrf.as_str()), ("name", "Mallory"), ("email", email), ("password", "another passphrase")];
    let (status, headers, page) = browser.request("POST", "/account/sign-up", Some(&fields)).await;
    let mut cookies: Vec<String> = headers.get_all("set-cookie").iter().map(|c| c.to_str().unwrap().split('=').next().unwrap().to_owned()).collect();
    cookies.sort();
    let mut masked = page.replace(email, "EMAIL").replace(&csrf, "TOKEN");
    if masked.contains(r#"name="csrf" value=""#) {
        let token = between(&masked, r#"name="csrf" value=""#, "\"").to_owned();
        masked = masked.replace(&token, "TOKEN");
    }
    (status, cookies, masked)
}

#[tokio::test]
async fn item_14_the_storefront_sign_up_answers_a_taken_address_like_a_new_one_and_signs_nobody_in() {
    let shop = shop_with_mail().await;
    customer(&shop, "grace@example.com").await;

    let new = storefront_sign_up(&shop, "mallory@example.com").await;
    let taken = storefront_sign_up(&shop, "grace@example.com").await;
    assert_eq!(new, taken, "one form post must not tell which addresses have accounts");
    let (status, cookies, page) = new;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!cookies.iter().any(|c| c == "access" || c == "refresh"), "no session from signing up: {cookies:?}");
    assert!(page.contains("We have sent a message to EMAIL: follow it to confirm your address, then sign in"), "{page}");
    assert!(page.contains(r#"action="/account/sign-in""#), "the sign-in form: {page}");

    // The new address's link confirms it and offers sign-in, without signing in.
    let link = mail_link(&shop, "mallory@example.com", "Confirm your email", "/account/verify-email?token=").await;
    let mut browser = Browser::new(&shop);
    let (_, confirm) = browser.get(&link).await;
    let (status, done) = browser.submit(&confirm, "/account/verify-email", &[("token", between(&confirm, r#"name="token" value=""#, "\""))]).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Your email address is confirmed.") && done.contains(r#"href="/account/sign-in""#), "{done}");
    assert!(!browser.cookies.contains_key("access") && !browser.cookies.contains_key("refresh"));
    let (_, form) = browser.get("/account/sign-in").await;
    let (status, account) = browser.submit(&form, "/account/sign-in", &[("email", "mallory@example.com"), ("password", "another passphrase")]).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(browser.cookies.contains_key("access"), "{account}");
}

/// The token of a mailed link.
fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap().to_owned()
}

async fn verify(shop: &Shop, token: &str) -> (StatusCode, Value) {
    shop.send("POST", "/api/v1/auth/verify-email", &Who::default(), Some(json!({"token": token}))).await
}

/// Asks for a move to `to` and returns the link mailed there.
async fn email_change_link(shop: &Shop, who: &Who, to: &str) -> String {
    let (s, me) = shop.send("PATCH", "/api/v1/me", who, Some(json!({"email": to, "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    token_of(&mail_link(shop, to, "Confirm your email", "/account/verify-email?token=").await)
}

#[tokio::test]
async fn item_15_email_change_links_die_with_account_recovery() {
    let shop = shop_with_mail().await;
    let ada = bearer(&customer(&shop, "ada@example.com").await);

    // A move to another mailbox is asked for, then the password changed
    // (someone had the password): the pending move is void.
    let link = email_change_link(&shop, &ada, "ada@one.example").await;
    let (s, body) = shop.send("POST", "/api/v1/auth/password/change", &ada, Some(json!({
        "current_password": PASSWORD, "new_password": "a newer passphrase"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, body) = verify(&shop, &link).await;
    assert_eq!((s, error(&body).0), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_token")), "an email change survived a password change: {body}");

    // The same after a password reset and after signing out everywhere.
    let anyone = Who::default();
    let login = |password: &'static str| shop.send("POST", "/api/v1/auth/login", &anyone, Some(json!({"email": "ada@example.com", "password": password})));
    let (_, tokens) = login("a newer passphrase").await;
    let ada = bearer(tokens["access_token"].as_str().unwrap());
    let (s, _) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "ada@two.example", "password": "a newer passphrase"}))).await;
    assert_eq!(s, StatusCode::OK);
    let link = token_of(&mail_link(&shop, "ada@two.example", "Confirm your email", "/account/verify-email?token=").await);
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "ada@example.com"}))).await;
    let reset = token_of(&mail_link(&shop, "ada@example.com", "Reset your", "/account/reset-password?token=").await);
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": reset, "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (s, body) = verify(&shop, &link).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "an email change survived a password reset: {body}");

    let (_, tokens) = login(PASSWORD).await;
    let ada = bearer(tokens["access_token"].as_str().unwrap());
    let link = email_change_link(&shop, &ada, "ada@three.example").await;
    assert_eq!(shop.send("POST", "/api/v1/auth/logout-all", &ada, None).await.0, StatusCode::NO_CONTENT);
    let (s, body) = verify(&shop, &link).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "an email change survived signing out everywhere: {body}");
    let (_, tokens) = login(PASSWORD).await;
    let (_, me) = shop.send("GET", "/api/v1/me", &bearer(tokens["access_token"].as_str().unwrap()), None).await;
    assert_eq!(me["email"], "ada@example.com");
}

#[tokio::test]
async fn item_15_reset_links_die_with_an_email_change() {
    let shop = shop_with_mail().await;
    let bo = bearer(&customer(&shop, "bo@example.com").await);

    // A reset link sits in the old mailbox; the account moves to a new one.
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "bo@example.com"}))).await;
    let reset = token_of(&mail_link(&shop, "bo@example.com", "Reset your", "/account/reset-password?token=").await);
    let link = email_change_link(&shop, &bo, "bo@new.example").await;
    assert_eq!(verify(&shop, &link).await.0, StatusCode::NO_CONTENT);

    // The old mailbox's link no longer sets the password.
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": reset, "password": "the old mailbox's pick"}))).await;
    assert_eq!((s, error(&body).0), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_token")), "a reset link outlived an email change: {body}");
    let anyone = Who::default();
    let login = |password: &'static str| shop.send("POST", "/api/v1/auth/login", &anyone, Some(json!({"email": "bo@new.example", "password": password})));
    assert_eq!(login(PASSWORD).await.0, StatusCode::OK);

    // Nor does any reset link made out to another address than the account's.
    let (_, me) = shop.send("GET", "/api/v1/me", &bo, None).await;
    use sha2::Digest;
    let stray = "a-reset-token-sent-to-the-old-address";
    let db = shop.app.db("auth").unwrap().clone();
    platform::on_write!(db, pool => sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, expires_at_ms, created_at) VALUES ($1, $2, 'reset_password', 'bo@example.com', $3, $4)")
        .bind(hex::encode(sha2::Sha256::digest(stray.as_bytes()))).bind(me["id"].as_str().unwrap())
        .bind(((now() + 3600) * 1000) as i64).bind(time::OffsetDateTime::now_utc())
        .execute(pool).await.map(|_| ())).unwrap();
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": stray, "password": "the old mailbox's pick"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(login("the old mailbox's pick").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn item_7_wrong_current_passwords_at_step_ups_are_throttled_like_sign_ins() {
    let shop = Shop::new().await;
    let n = shop.config.auth.sign_in_throttle_after as usize;
    let ada = bearer(&customer(&shop, "ada@example.com").await);
    let guess = |i: usize| -> (&'static str, &'static str, Value) {
        let wrong = format!("guess number {i}");
        match i % 4 {
            0 => ("PATCH", "/api/v1/me", json!({"email": "thief@example.com", "password": wrong})),
            1 => ("POST", "/api/v1/me/mfa/totp", json!({"password": wrong})),
            2 => ("POST", "/api/v1/auth/password/change", json!({"current_password": wrong, "new_password": "the thiefs passphrase"})),
            _ => ("DELETE", "/api/v1/me", json!({"password": wrong})),
        }
    };

    // A stolen token guesses the password through each step-up in turn: as
    // many guesses as signing in would allow, then a wait.
    for i in 0..n {
        let (method, path, body) = guess(i);
        let (s, e) = shop.send(method, path, &ada, Some(body)).await;
        assert_eq!((s, error(&e).0), (StatusCode::FORBIDDEN, Some("wrong_password")), "guess {i} at {path}: {e}");
    }
    for i in n..n + 4 {
        let (method, path, body) = guess(i);
        let (s, headers, e) = shop.send_full(method, path, &ada, Some(body)).await;
        assert_eq!((s, error(&e).0), (StatusCode::TOO_MANY_REQUESTS, Some("sign_in_throttled")), "guess {i} at {path}: {e}");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait >= 1, "{headers:?}");
    }
    // Even the right password waits now, and so does signing in from that client.
    let (s, e) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "thief@example.com", "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    let (s, e) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": "ada@example.com", "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    let (_, me) = shop.send("GET", "/api/v1/me", &ada, None).await;
    assert_eq!((me["email"].as_str(), me["mfa_enabled"].as_bool()), (Some("ada@example.com"), Some(false)), "{me}");
}

/// A browser at `from` signed in through the storefront's form.
async fn signed_in_at<'a>(shop: &'a Shop, from: &str, email: &str) -> Browser<'a> {
    let mut browser = Browser::at(shop, from);
    let (_, form) = browser.get("/account/sign-in").await;
    let (s, account) = browser.submit(&form, "/account/sign-in", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(s, StatusCode::OK, "{account}");
    assert!(browser.cookies.contains_key("access"), "{account}");
    browser
}

#[tokio::test]
async fn item_7_storefront_step_ups_count_the_browsers_address_not_one_shared_client() {
    let shop = Shop::new().await;
    let n = shop.config.auth.sign_in_throttle_after as usize;
    customer(&shop, "ada@example.com").await;
    let owner = signed_in_at(&shop, "198.51.100.7:1", "ada@example.com").await;
    // A thief with a copy of the session, elsewhere.
    let mut thief = Browser::at(&shop, "203.0.113.5:1");
    thief.cookies = owner.cookies.clone();
    let mut owner = owner;

    // The thief guesses through the storefront's email and TOTP forms.
    let (_, account) = thief.get("/account").await;
    let (_, security) = thief.get("/account/security").await;
    for i in 0..n {
        let wrong = format!("guess number {i}");
        if i % 2 == 0 {
            let (s, page) = thief.submit(&account, "/account/email", &[("email", "thief@example.com"), ("password", &wrong)]).await;
            assert!(s == StatusCode::OK && page.contains("not your current password"), "guess {i}: {s} {page}");
        } else {
            let (s, page) = thief.submit(&security, "/account/security/totp", &[("password", &wrong)]).await;
            assert!(s == StatusCode::UNPROCESSABLE_ENTITY && !page.contains(r#"<code class="secret">"#), "guess {i}: {s} {page}");
        }
    }

    // The owner, at their own address, is not held up by the thief's guesses.
    let (_, security) = owner.get("/account/security").await;
    let (s, enrol) = owner.submit(&security, "/account/security/totp", &[("password", PASSWORD)]).await;
    assert!(s == StatusCode::OK && enrol.contains(r#"<code class="secret">"#), "the owner could not enrol TOTP: {s} {enrol}");
    let (_, account) = owner.get("/account").await;
    let (s, sent) = owner.submit(&account, "/account/email", &[("email", "ada@new.example"), ("password", PASSWORD)]).await;
    assert!(s == StatusCode::OK && sent.contains("follow the link we have sent to the new address"), "the owner could not change email: {s} {sent}");

    // The thief's address waits, even with the right password, at every
    // step-up and at signing in: one budget for both.
    let (_, account) = thief.get("/account").await;
    let (s, page) = thief.submit(&account, "/account/email", &[("email", "thief@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{page}");
    let (s, page) = thief.submit(&security, "/account/security/totp", &[("password", PASSWORD)]).await;
    assert!(s == StatusCode::TOO_MANY_REQUESTS && !page.contains(r#"<code class="secret">"#), "{s} {page}");
    let (s, page) = thief.submit(&account, "/account/delete", &[("password", PASSWORD)]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{page}");
    let mut elsewhere = Browser::at(&shop, "203.0.113.5:2");
    let (_, form) = elsewhere.get("/account/sign-in").await;
    let (s, page) = elsewhere.submit(&form, "/account/sign-in", &[("email", "ada@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(!elsewhere.cookies.contains_key("access"));
    let (_, me) = owner.get("/account").await;
    assert!(me.contains("ada@example.com"), "the account is still there: {me}");
}

/// The live refresh tokens and unused email-change links of `email`'s account.
async fn live_sessions_and_moves(shop: &Shop, email: &str) -> (i64, i64) {
    let tokens = shop.count("auth", &format!(
        "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at_ms IS NULL AND user_id = (SELECT id FROM users WHERE email = '{email}')")).await;
    let moves = shop.count("auth", &format!(
        "SELECT COUNT(*) FROM one_time_tokens t JOIN users u ON u.id = t.user_id \
         WHERE u.email = '{email}' AND t.purpose = 'verify_email' AND t.used_at_ms IS NULL AND t.email <> u.email")).await;
    (tokens, moves)
}

#[tokio::test]
async fn item_15_a_new_password_comes_with_its_sign_out_or_not_at_all() {
    let shop = shop_with_mail().await;
    let ada = bearer(&customer(&shop, "ada@example.com").await);
    let anyone = Who::default();
    let login = |password: &'static str| shop.send("POST", "/api/v1/auth/login", &anyone, Some(json!({"email": "ada@example.com", "password": password})));
    email_change_link(&shop, &ada, "ada@elsewhere.example").await;
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "ada@example.com"}))).await;
    let reset = token_of(&mail_link(&shop, "ada@example.com", "Reset your", "/account/reset-password?token=").await);
    assert_eq!(live_sessions_and_moves(&shop, "ada@example.com").await, (1, 1));

    // Signing the other sessions out fails (the database refuses to revoke
    // refresh tokens): the new password must not be kept without it.
    let db = shop.app.db("auth").unwrap().clone();
    let (refuse, allow) = match db.dialect() {
        platform::db::Dialect::Sqlite => (
            "CREATE TRIGGER refuse_sign_out BEFORE UPDATE OF revoked_at_ms ON refresh_tokens \
             BEGIN SELECT RAISE(ABORT, 'sign-out refused'); END",
            "DROP TRIGGER refuse_sign_out",
        ),
        platform::db::Dialect::Postgres => (
            "CREATE FUNCTION refuse_sign_out() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'sign-out refused'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_sign_out BEFORE UPDATE OF revoked_at_ms ON refresh_tokens FOR EACH ROW EXECUTE FUNCTION refuse_sign_out();",
            "DROP TRIGGER refuse_sign_out ON refresh_tokens",
        ),
    };
    platform::on_write!(db, pool => sqlx::raw_sql(refuse).execute(pool).await.map(|_| ())).unwrap();
    let (s, body) = shop.send("POST", "/api/v1/auth/password/change", &ada, Some(json!({
        "current_password": PASSWORD, "new_password": "the changed passphrase"}))).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": reset, "password": "the reset passphrase"}))).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    platform::on_write!(db, pool => sqlx::raw_sql(allow).execute(pool).await.map(|_| ())).unwrap();
    assert_eq!(login("the changed passphrase").await.0, StatusCode::UNAUTHORIZED, "a password change was kept without its sign-out");
    assert_eq!(login("the reset passphrase").await.0, StatusCode::UNAUTHORIZED, "a password reset was kept without its sign-out");
    assert_eq!(live_sessions_and_moves(&shop, "ada@example.com").await, (1, 1), "nothing else happened either");

    // Once it can, the reset link (unused) sets the password and signs
    // everything out, the pending move to another mailbox included.
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": reset, "password": "the reset passphrase"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(live_sessions_and_moves(&shop, "ada@example.com").await, (0, 0));
    let (_, tokens) = login("the reset passphrase").await;
    let ada = bearer(tokens["access_token"].as_str().unwrap());
    let (s, me) = shop.send("PATCH", "/api/v1/me", &ada, Some(json!({"email": "ada@another.example", "password": "the reset passphrase"}))).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(live_sessions_and_moves(&shop, "ada@example.com").await, (1, 1));
    let (s, body) = shop.send("POST", "/api/v1/auth/password/change", &ada, Some(json!({
        "current_password": "the reset passphrase", "new_password": "the changed passphrase"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(live_sessions_and_moves(&shop, "ada@example.com").await, (0, 0), "a password change left a session or a move alive");
}

/// Posts `body` to `path` in a task of its own: its status when it is done.
fn post_meanwhile(shop: &Shop, path: &'static str, body: Value) -> tokio::task::JoinHandle<StatusCode> {
    use tower::ServiceExt;
    let router = shop.app.router();
    tokio::spawn(async move {
        let r = axum::http::Request::builder().method("POST").uri(path).header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string())).unwrap();
        router.oneshot(r).await.unwrap().status()
    })
}

/// Uses a mailed link while another transaction holds the account's row, as
/// a sign-out does before it voids the account's links: the link's use must
/// wait for the account before it takes its token, or the two deadlock
/// (PostgreSQL locks rows; SQLite the whole database, where the link is used
/// once the sign-out is done).
async fn use_link_while_the_account_is_held(shop: &Shop, email: &str, token: &str, path: &'static str, body: Value) {
    use sha2::Digest;
    let db = shop.app.db("auth").unwrap().clone();
    if db.dialect() == platform::db::Dialect::Sqlite {
        assert_eq!(post_meanwhile(shop, path, body).await.unwrap(), StatusCode::NO_CONTENT);
        return;
    }
    let mut held = db.begin().await.unwrap();
    let pid: i32 = platform::on_tx!(held, c => sqlx::query_scalar("UPDATE users SET name = name WHERE email = $1 RETURNING pg_backend_pid()")
        .bind(email).fetch_one(c).await).unwrap();
    let link = post_meanwhile(shop, path, body);
    // Until the link's use waits on the held row.
    let mut waiting = 0;
    for _ in 0..2000 {
        waiting = platform::on_db!(db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))").bind(pid).fetch_one(pool).await).unwrap();
        if waiting > 0 || link.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 1, "the link's use did not wait for the account");
    // The sign-out's next step: the account's links. Still free, and unused.
    let token_row = platform::on_tx!(held, c => sqlx::query_scalar::<_, Option<i64>>(
        "SELECT used_at_ms FROM one_time_tokens WHERE token_hash = $1 FOR UPDATE NOWAIT")
        .bind(hex::encode(sha2::Sha256::digest(token.as_bytes()))).fetch_one(c).await);
    held.rollback().await.unwrap();
    assert!(matches!(token_row, Ok(None)), "the link's use took its token before the account (a deadlock with a sign-out): {token_row:?}");
    assert_eq!(link.await.unwrap(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_15_a_mailed_link_locks_the_account_before_its_token_like_a_sign_out() {
    let shop = shop_with_mail().await;
    let ada = bearer(&customer(&shop, "ada@example.com").await);
    customer(&shop, "bo@example.com").await;

    // An email-change link, used while the account is held.
    let link = email_change_link(&shop, &ada, "ada@new.example").await;
    use_link_while_the_account_is_held(&shop, "ada@example.com", &link, "/api/v1/auth/verify-email", json!({"token": link})).await;
    let (_, me) = shop.send("GET", "/api/v1/me", &ada, None).await;
    assert_eq!(me["email"], "ada@new.example");

    // A reset link alike.
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "bo@example.com"}))).await;
    let reset = token_of(&mail_link(&shop, "bo@example.com", "Reset your", "/account/reset-password?token=").await);
    use_link_while_the_account_is_held(&shop, "bo@example.com", &reset, "/api/v1/auth/password/reset", json!({"token": reset, "password": "a brand new passphrase"})).await;
    let (s, _) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": "bo@example.com", "password": "a brand new passphrase"}))).await;
    assert_eq!(s, StatusCode::OK);
}

/// One mailed link sent many times at once: each use waits for the account's
/// row in its own transaction and reads the account there, so the burst
/// cannot hold every database connection while the first use waits for one
/// more (which stalled sign-in for everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_15_one_link_sent_many_times_at_once_is_used_once_and_holds_up_nobody() {
    let shop = shop_with_mail().await;
    let ada = bearer(&customer(&shop, "ada@example.com").await);
    let link = email_change_link(&shop, &ada, "ada@burst.example").await;
    let uses: Vec<_> = (0..24).map(|_| post_meanwhile(&shop, "/api/v1/auth/verify-email", json!({"token": link}))).collect();
    let mut answers = Vec::new();
    for used in uses {
        answers.push(used.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|s| **s == StatusCode::NO_CONTENT).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|s| *s == StatusCode::NO_CONTENT || *s == StatusCode::UNPROCESSABLE_ENTITY), "{answers:?}");
    let (s, _) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": "ada@burst.example", "password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK);
}
