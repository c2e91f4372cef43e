//! Auth's routes and their request and response types.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use kernel::auth::Role;
use kernel::error::ErrorBody;
use kernel::id::UserId;
use kernel::page::{Page, PageParams};
use platform::auth::{Principal, RequirePermission, perm};
use platform::http::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AuthError;
use crate::keys::Jwks;
use crate::service::{AddressPatch, Auth, ProfileUpdate, Tokens};
use crate::store::{self, User};

pub fn router(auth: Auth) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(verify_email))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
        .routes(routes!(me, update_me, delete_me))
        .routes(routes!(start_totp, disable_totp))
        .routes(routes!(list_addresses, create_address))
        .routes(routes!(update_address, delete_address))
        .routes(routes!(export_me))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(confirm_totp))
        .routes(routes!(jwks))
        .routes(routes!(openid_configuration))
        .routes(routes!(admin_list_users))
        .routes(routes!(admin_get_user, admin_update_user))
        .routes(routes!(admin_audit))
        .routes(routes!(admin_unlock_user))
        .routes(routes!(admin_reset_mfa))
        .with_state(auth)
}

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    pub roles: Vec<Role>,
    pub mfa_enabled: bool,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id.to_string(),
            email: u.email,
            email_verified: u.email_verified_at.is_some(),
            name: u.name,
            phone: u.phone,
            locale: u.locale,
            roles: u.roles,
            mfa_enabled: u.totp_enabled_at.is_some(),
            disabled: u.disabled_at.is_some(),
            created_at: u.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// 10+ characters, not a common password, not the email.
    pub password: String,
    pub name: String,
}

/// Create a customer account; a verification link is mailed. An address that
/// already has an account gets the same answer (its owner is mailed instead).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 422, body = ErrorBody),
              (status = 429, description = "too many sign-ups from this address; see Retry-After", body = ErrorBody)))]
async fn register(State(auth): State<Auth>, ClientIp(ip): ClientIp, Json(body): Json<RegisterRequest>) -> Result<impl IntoResponse, AuthError> {
    auth.sign_up_allowed(&ip).await?;
    let user = auth.register(&body.email, &body.password, &body.name).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The current TOTP code, or a recovery code, when MFA is on.
    pub totp_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub refresh_token: String,
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        TokenResponse {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
        }
    }
}

/// The client's address, as `platform::http::client_ip` finds it (the
/// peer, or the hop a trusted proxy reported); `unknown` for in-process calls.
pub struct ClientIp(pub String);

impl FromRequestParts<Auth> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, auth: &Auth) -> Result<Self, Self::Rejection> {
        let ip = platform::http::request_client_ip(&auth.config, &parts.extensions, &parts.headers);
        Ok(ClientIp(ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())))
    }
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody),
              (status = 429, description = "too many attempts from this address (for this email, or at all); see Retry-After", body = ErrorBody)))]
async fn login(
    State(auth): State<Auth>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, AuthError> {
    let (_, tokens) = auth.login(&body.email, &body.password, body.totp_code.as_deref(), &ip).await?;
    Ok(Json(tokens.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Trade a refresh token for new tokens (the old one is used up).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody)))]
async fn refresh(State(auth): State<Auth>, Json(body): Json<RefreshRequest>) -> Result<Json<TokenResponse>, AuthError> {
    Ok(Json(auth.refresh(&body.refresh_token).await?.into()))
}

/// Sign out the session of this refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "signed out")))]
async fn logout(State(auth): State<Auth>, Json(body): Json<RefreshRequest>) -> Result<StatusCode, AuthError> {
    auth.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sign out every session of the signed-in user.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    responses((status = 204, description = "signed out everywhere"), (status = 401, body = ErrorBody)))]
async fn logout_all(State(auth): State<Auth>, who: Principal) -> Result<StatusCode, AuthError> {
    auth.logout_all(&who.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
}

/// Confirm an email address with the mailed token.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses((status = 204, description = "verified"), (status = 422, body = ErrorBody)))]
async fn verify_email(State(auth): State<Auth>, Json(body): Json<TokenRequest>) -> Result<StatusCode, AuthError> {
    auth.verify_email(&body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    pub email: String,
}

/// Ask for a password-reset link. Always 202, whether the address is known or not.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "auth", request_body = ForgotRequest,
    responses((status = 202, description = "a link is mailed if the address has an account")))]
async fn forgot_password(State(auth): State<Auth>, ClientIp(ip): ClientIp, Json(body): Json<ForgotRequest>) -> Result<StatusCode, AuthError> {
    auth.forgot_password(&body.email, &ip).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub token: String,
    pub password: String,
}

/// Set a new password with the mailed token; every session is signed out.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses((status = 204, description = "password set"), (status = 422, body = ErrorBody)))]
async fn reset_password(State(auth): State<Auth>, Json(body): Json<ResetRequest>) -> Result<StatusCode, AuthError> {
    auth.reset_password(&body.token, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// Change the password (needs the current one); other sessions are signed out.
#[utoipa::path(post, path = "/api/v1/auth/password/change", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 204, description = "changed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn change_password(
    State(auth): State<Auth>,
    who: Principal,
    ClientIp(ip): ClientIp,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, AuthError> {
    auth.change_password(&who.user_id, &body.current_password, &body.new_password, &ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/api/v1/me", tag = "me",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
async fn me(State(auth): State<Auth>, who: Principal) -> Result<Json<UserView>, AuthError> {
    Ok(Json(auth.user(&who.user_id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    pub name: Option<String>,
    /// E.164; `null` removes it.
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    /// A language tag; `null` removes it.
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub locale: Option<Option<String>>,
    /// A new address: needs `password`, and takes effect when the link
    /// mailed to it is used. The answer is the same whether or not another
    /// account has the address.
    pub email: Option<String>,
    /// The current password; required with `email`.
    pub password: Option<String>,
}

/// Update the signed-in user's profile.
#[utoipa::path(patch, path = "/api/v1/me", tag = "me", request_body = UpdateMeRequest,
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody),
              (status = 403, description = "`password_required` or `wrong_password` for a change of email", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_me(
    State(auth): State<Auth>,
    who: Principal,
    ClientIp(ip): ClientIp,
    Json(body): Json<UpdateMeRequest>,
) -> Result<Json<UserView>, AuthError> {
    let change = ProfileUpdate { name: body.name, phone: body.phone, locale: body.locale, email: body.email, password: body.password, ip };
    Ok(Json(auth.update_profile(&who.user_id, change).await?.into()))
}

/// The public keys that verify access tokens (JWKS, RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, body = Jwks)))]
async fn jwks(State(auth): State<Auth>) -> Result<impl IntoResponse, AuthError> {
    let keys = auth.keys.jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(keys)))
}

#[derive(Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
}

/// Discovery document, so standard JWT/OIDC libraries can verify our tokens.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "auth",
    responses((status = 200, body = OpenIdConfiguration)))]
async fn openid_configuration(State(auth): State<Auth>) -> impl IntoResponse {
    let issuer = auth.config.public_url();
    let doc = OpenIdConfiguration {
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/api/v1/auth/login"),
        issuer,
        id_token_signing_alg_values_supported: vec!["EdDSA"],
        token_endpoint_auth_methods_supported: vec!["none"],
        subject_types_supported: vec!["public"],
        response_types_supported: vec!["token"],
    };
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(doc))
}

#[derive(Deserialize, IntoParams)]
pub struct UserFilter {
    /// Part of the email address.
    pub email: Option<String>,
    pub role: Option<Role>,
}

/// Staff: users, filtered by email or role (`customers:read`).
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(UserFilter, PageParams),
    responses((status = 200, body = Page<UserView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_list_users(
    State(auth): State<Auth>,
    _: RequirePermission<perm::CustomersRead>,
    Query(filter): Query<UserFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<UserView>>, kernel::ApiError> {
    let page = page.parse()?;
    let users = store::list_users(&auth.db, filter.email.as_deref(), filter.role, page.after.as_deref(), page.limit)
        .await
        .map_err(|e| kernel::ApiError::from(&AuthError::from(e)))?;
    let page = Page::from_rows(users, page.limit, |u| u.id.to_string());
    Ok(Json(Page {
        data: page.data.into_iter().map(UserView::from).collect(),
        has_more: page.has_more,
        next_cursor: page.next_cursor,
    }))
}

fn user_id(raw: &str) -> Result<UserId, AuthError> {
    UserId::parse(raw).map_err(|_| AuthError::UserNotFound)
}

/// Staff: one user (`customers:read`).
#[utoipa::path(get, path = "/api/v1/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
async fn admin_get_user(
    State(auth): State<Auth>,
    _: RequirePermission<perm::CustomersRead>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AuthError> {
    Ok(Json(auth.user(&user_id(&id)?).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUserUpdate {
    pub roles: Option<Vec<Role>>,
    /// Disabling signs the user out everywhere.
    pub disabled: Option<bool>,
}

/// Staff: change a user's roles or disable them (`staff:manage`).
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = AdminUserUpdate,
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn admin_update_user(
    State(auth): State<Auth>,
    RequirePermission(who, ..): RequirePermission<perm::StaffManage>,
    Path(id): Path<String>,
    Json(body): Json<AdminUserUpdate>,
) -> Result<Json<UserView>, AuthError> {
    let user = auth.administer(&who.user_id, &user_id(&id)?, body.roles, body.disabled).await?;
    Ok(Json(user.into()))
}

/// Staff: turn a user's two-step sign-in off, e.g. after a lost phone
/// (`staff:manage`; audited; not on oneself).
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/mfa", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "off"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn admin_reset_mfa(
    State(auth): State<Auth>,
    RequirePermission(who, ..): RequirePermission<perm::StaffManage>,
    Path(id): Path<String>,
) -> Result<StatusCode, AuthError> {
    auth.reset_mfa(&who.user_id, &user_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Staff: let a user sign in again at once from every address that was
/// made to wait after failed sign-ins (`customers:write`, and `staff:manage`
/// for a staff account; audited).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/unlock", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "every wait lifted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn admin_unlock_user(
    State(auth): State<Auth>,
    RequirePermission(who, ..): RequirePermission<perm::CustomersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, AuthError> {
    auth.clear_sign_in_throttles(&who, &user_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub actor_id: Option<String>,
    pub action: String,
    pub subject_id: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

/// Staff: the audit log of staff actions and security events, newest first (`staff:manage`).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<AuditView>), (status = 403, body = ErrorBody)))]
async fn admin_audit(
    State(auth): State<Auth>,
    _: RequirePermission<perm::StaffManage>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AuditView>>, kernel::ApiError> {
    let page = page.parse()?;
    let rows = store::audit_entries(&auth.db, page.after.as_deref(), page.limit)
        .await
        .map_err(|e| kernel::ApiError::from(&AuthError::from(e)))?;
    let views: Vec<AuditView> = rows
        .into_iter()
        .map(|(id, at, actor_id, action, subject_id, ip, detail)| AuditView {
            id,
            at,
            actor_id,
            action,
            subject_id,
            ip,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(Json(Page::from_rows(views, page.limit, |a| a.id.clone())))
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolmentView {
    /// Base32 secret to type into an authenticator app.
    pub secret: String,
    /// `otpauth://` URI to show as a QR code.
    pub otpauth_uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    /// The current password (required; a missing one is `password_required`).
    pub password: Option<String>,
}

/// Start TOTP enrolment (needs the password); confirm it with a first code.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "me", request_body = StepUpRequest,
    responses((status = 200, body = TotpEnrolmentView),
              (status = 403, description = "`password_required` or `wrong_password`", body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn start_totp(
    State(auth): State<Auth>,
    who: Principal,
    ClientIp(ip): ClientIp,
    body: axum::body::Bytes,
) -> Result<Json<TotpEnrolmentView>, kernel::ApiError> {
    // No body at all is a missing password, answered as such.
    let password = if body.is_empty() { None } else { platform::http::parse_json::<StepUpRequest>(&body)?.password };
    let e = auth.start_totp(&who.user_id, password.as_deref(), &ip).await.map_err(|e| kernel::ApiError::from(&e))?;
    Ok(Json(TotpEnrolmentView { secret: e.secret, otpauth_uri: e.uri }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each works once in place of a TOTP code. Shown only now.
    pub recovery_codes: Vec<String>,
}

/// Turn TOTP on with a code from the authenticator; returns recovery codes.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "me", request_body = CodeRequest,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody)))]
async fn confirm_totp(
    State(auth): State<Auth>,
    who: Principal,
    Json(body): Json<CodeRequest>,
) -> Result<Json<RecoveryCodes>, AuthError> {
    Ok(Json(RecoveryCodes { recovery_codes: auth.confirm_totp(&who.user_id, &body.code).await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    pub password: String,
}

/// Turn TOTP off (needs the password).
#[utoipa::path(delete, path = "/api/v1/me/mfa/totp", tag = "me", request_body = PasswordRequest,
    responses((status = 204, description = "off"), (status = 403, body = ErrorBody)))]
async fn disable_totp(
    State(auth): State<Auth>,
    who: Principal,
    ClientIp(ip): ClientIp,
    Json(body): Json<PasswordRequest>,
) -> Result<StatusCode, AuthError> {
    auth.disable_totp(&who.user_id, &body.password, &ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct AddressView {
    pub id: String,
    #[serde(flatten)]
    pub address: kernel::address::Address,
    pub default_shipping: bool,
    pub default_billing: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<store::StoredAddress> for AddressView {
    fn from(a: store::StoredAddress) -> Self {
        AddressView {
            id: a.id,
            address: a.address,
            default_shipping: a.default_shipping,
            default_billing: a.default_billing,
            created_at: a.created_at,
        }
    }
}

/// An address to add (all required fields) or the fields to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub name: Option<String>,
    pub line1: Option<String>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub line2: Option<Option<String>>,
    pub city: Option<String>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub region: Option<Option<String>>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    pub default_shipping: Option<bool>,
    pub default_billing: Option<bool>,
}

impl From<AddressRequest> for AddressPatch {
    fn from(r: AddressRequest) -> Self {
        AddressPatch {
            name: r.name,
            line1: r.line1,
            line2: r.line2,
            city: r.city,
            region: r.region,
            postal_code: r.postal_code,
            country: r.country,
            phone: r.phone,
            default_shipping: r.default_shipping,
            default_billing: r.default_billing,
        }
    }
}

/// The signed-in user's addresses.
#[utoipa::path(get, path = "/api/v1/me/addresses", tag = "me",
    responses((status = 200, body = Vec<AddressView>), (status = 401, body = ErrorBody)))]
async fn list_addresses(State(auth): State<Auth>, who: Principal) -> Result<Json<Vec<AddressView>>, AuthError> {
    Ok(Json(auth.addresses(&who.user_id).await?.into_iter().map(AddressView::from).collect()))
}

/// Add an address; the first one becomes the default for shipping and billing.
#[utoipa::path(post, path = "/api/v1/me/addresses", tag = "me", request_body = AddressRequest,
    responses((status = 201, body = AddressView), (status = 422, body = ErrorBody)))]
async fn create_address(
    State(auth): State<Auth>,
    who: Principal,
    Json(body): Json<AddressRequest>,
) -> Result<impl IntoResponse, AuthError> {
    let saved = auth.save_address(&who.user_id, None, body.into()).await?;
    Ok((StatusCode::CREATED, Json(AddressView::from(saved))))
}

/// Change an address.
#[utoipa::path(patch, path = "/api/v1/me/addresses/{id}", tag = "me", params(("id" = String, Path)),
    request_body = AddressRequest,
    responses((status = 200, body = AddressView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_address(
    State(auth): State<Auth>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<AddressRequest>,
) -> Result<Json<AddressView>, AuthError> {
    Ok(Json(auth.save_address(&who.user_id, Some(&id), body.into()).await?.into()))
}

/// Remove an address.
#[utoipa::path(delete, path = "/api/v1/me/addresses/{id}", tag = "me", params(("id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
async fn delete_address(State(auth): State<Auth>, who: Principal, Path(id): Path<String>) -> Result<StatusCode, AuthError> {
    auth.delete_address(&who.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything the platform holds about the signed-in user, as one JSON document.
#[utoipa::path(get, path = "/api/v1/me/export", tag = "me",
    responses((status = 200, description = "the export", body = serde_json::Value), (status = 401, body = ErrorBody)))]
async fn export_me(State(auth): State<Auth>, who: Principal) -> Result<impl IntoResponse, AuthError> {
    let doc = auth.export(&who.user_id).await?;
    Ok(([(header::CONTENT_DISPOSITION, "attachment; filename=\"emporium-export.json\"")], Json(doc)))
}

/// Delete the account (needs the password): personal data is erased, every
/// session ends, and the other services anonymise their copies.
#[utoipa::path(delete, path = "/api/v1/me", tag = "me", request_body = PasswordRequest,
    responses((status = 204, description = "erased"), (status = 403, body = ErrorBody)))]
async fn delete_me(State(auth): State<Auth>, who: Principal, ClientIp(ip): ClientIp, Json(body): Json<PasswordRequest>) -> Result<StatusCode, AuthError> {
    auth.delete_account(&who.user_id, &body.password, &ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub permissions: Vec<kernel::auth::Permission>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked: bool,
    /// The key itself: present only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<store::ApiKey> for ApiKeyView {
    fn from(k: store::ApiKey) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            permissions: k.permissions,
            created_by: k.created_by.to_string(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked: k.revoked_at.is_some(),
            key: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub permissions: Vec<kernel::auth::Permission>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// Staff: API keys (`staff:manage`).
#[utoipa::path(get, path = "/api/v1/admin/api-keys", tag = "admin",
    responses((status = 200, body = Vec<ApiKeyView>), (status = 403, body = ErrorBody)))]
async fn list_api_keys(
    State(auth): State<Auth>,
    _: RequirePermission<perm::StaffManage>,
) -> Result<Json<Vec<ApiKeyView>>, AuthError> {
    Ok(Json(auth.api_keys().await?.into_iter().map(ApiKeyView::from).collect()))
}

/// Staff: create an API key (`staff:manage`). The key is in this response only.
#[utoipa::path(post, path = "/api/v1/admin/api-keys", tag = "admin", request_body = CreateApiKey,
    responses((status = 201, body = ApiKeyView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_api_key(
    State(auth): State<Auth>,
    RequirePermission(who, ..): RequirePermission<perm::StaffManage>,
    Json(body): Json<CreateApiKey>,
) -> Result<impl IntoResponse, AuthError> {
    let (key, secret) = auth.create_api_key(&who, &body.name, body.permissions, body.expires_at).await?;
    let mut view = ApiKeyView::from(key);
    view.key = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Staff: revoke an API key (`staff:manage`).
#[utoipa::path(delete, path = "/api/v1/admin/api-keys/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "revoked"), (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(auth): State<Auth>,
    RequirePermission(who, ..): RequirePermission<perm::StaffManage>,
    Path(id): Path<String>,
) -> Result<StatusCode, AuthError> {
    auth.revoke_api_key(&who.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
