//! The attacks of the security review, each kept out by a test: an outsider,
//! a customer and each staff role trying what should not work.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod catalog_orders;
mod limits;
mod notify;
mod platform_http;
mod search;
mod signin;
mod storefront;
mod tokens;
