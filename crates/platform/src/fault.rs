//! Crash points for recovery tests: `point("checkout.authorised")` aborts
//! the process when `EMPORIUM_FAULT_POINT` names it, so a test can kill a
//! server between two steps and show that nothing is lost or done twice.
//! Unset (always, in production) it costs one load of a cached value.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("EMPORIUM_FAULT_POINT").ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(name) {
        tracing::error!(point = name, "fault point reached: aborting the process");
        crate::telemetry::flush_logs();
        std::process::abort();
    }
}
