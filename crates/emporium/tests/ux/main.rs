//! The storefront and the console as a shopper, a merchant and an operator
//! use them: what each is shown, in pages and in a real browser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

#[path = "../support/mod.rs"]
mod support;

mod cart;
mod catalog;
mod console;
mod operator;
mod screens;
