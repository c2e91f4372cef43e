//! Auth's errors and their one mapping to the API error shape.

use kernel::ApiError;

use crate::crypto::CryptoError;
use crate::domain::Invalid;
use crate::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("wrong password")]
    WrongPassword,
    #[error("confirm this with your current password")]
    PasswordRequired,
    /// Too many failed sign-ins for this email from this address; the same
    /// for known and unknown emails.
    #[error("too many failed sign-ins for this email from your address; wait before trying again")]
    SignInThrottled { retry_after_secs: u64 },
    #[error("too many attempts")]
    RateLimited { retry_after_secs: u64 },
    #[error("the account is disabled")]
    Disabled,
    #[error("this account needs a TOTP code or recovery code")]
    MfaRequired,
    #[error("the code is wrong, used or expired")]
    InvalidMfaCode,
    #[error("TOTP is already on")]
    MfaAlreadyEnabled,
    #[error("start TOTP enrolment first")]
    MfaNotStarted,
    #[error("the link or code is invalid, used or expired")]
    InvalidOneTimeToken,
    #[error("the refresh token is invalid or expired")]
    InvalidRefreshToken,
    #[error("the refresh token was already used")]
    RefreshTokenReused,
    #[error("no such user")]
    UserNotFound,
    #[error("no such address")]
    AddressNotFound,
    #[error("no such API key")]
    ApiKeyNotFound,
    #[error("you cannot grant `{0}`, which you do not have")]
    CannotGrant(kernel::auth::Permission),
    #[error("you cannot do this to your own account")]
    NotOnSelf,
    /// Staff accounts are looked after only by those who manage staff.
    #[error("this needs the `{0}` permission")]
    MissingPermission(kernel::auth::Permission),
    #[error(transparent)]
    Store(#[from] platform::DbError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the service is shutting down")]
    Busy,
}

impl From<&AuthError> for ApiError {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::Invalid(i) => ApiError::invalid(i.code, i.reason.clone()).with_field(i.field),
            AuthError::EmailTaken => ApiError::conflict("email_taken", e.to_string()).with_field("email"),
            AuthError::InvalidCredentials => ApiError::unauthenticated("invalid_credentials", e.to_string()),
            AuthError::WrongPassword => ApiError::forbidden("wrong_password", e.to_string()).with_field("password"),
            AuthError::PasswordRequired => ApiError::forbidden("password_required", e.to_string()).with_field("password"),
            AuthError::SignInThrottled { retry_after_secs } => {
                ApiError::too_many("sign_in_throttled", e.to_string(), *retry_after_secs)
            }
            AuthError::RateLimited { retry_after_secs } => ApiError::rate_limited(*retry_after_secs),
            AuthError::Disabled => ApiError::forbidden("account_disabled", e.to_string()),
            AuthError::MfaRequired => ApiError::unauthenticated("mfa_required", e.to_string()).with_field("totp_code"),
            AuthError::InvalidMfaCode => ApiError::unauthenticated("invalid_mfa_code", e.to_string()).with_field("totp_code"),
            AuthError::MfaAlreadyEnabled => ApiError::conflict("mfa_already_enabled", e.to_string()),
            AuthError::MfaNotStarted => ApiError::conflict("mfa_not_started", e.to_string()),
            AuthError::InvalidOneTimeToken => ApiError::invalid("invalid_token", e.to_string()).with_field("token"),
            AuthError::InvalidRefreshToken => ApiError::unauthenticated("invalid_refresh_token", e.to_string()),
            AuthError::RefreshTokenReused => ApiError::unauthenticated(
                "refresh_token_reused",
                "this refresh token was already used; every session of its family is signed out",
            ),
            AuthError::UserNotFound => ApiError::not_found("user_not_found", e.to_string()),
            AuthError::AddressNotFound => ApiError::not_found("address_not_found", e.to_string()),
            AuthError::ApiKeyNotFound => ApiError::not_found("api_key_not_found", e.to_string()),
            AuthError::CannotGrant(_) => ApiError::forbidden("cannot_grant", e.to_string()).with_field("permissions"),
            AuthError::NotOnSelf => ApiError::conflict("not_on_self", e.to_string()),
            AuthError::MissingPermission(_) => ApiError::forbidden("missing_permission", e.to_string()),
            AuthError::Store(cause) => ApiError::from(cause),
            AuthError::Crypto(cause) => ApiError::internal(cause),
            AuthError::Keys(cause) => ApiError::internal(cause),
            AuthError::Join(cause) => ApiError::internal(cause),
            AuthError::Busy => ApiError::internal(&"password hashing is unavailable"),
        }
    }
}

impl axum::response::IntoResponse for AuthError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(&self).into_response()
    }
}
