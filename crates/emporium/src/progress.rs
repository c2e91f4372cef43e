//! Progress on the terminal for the long commands (`seed`, `import`,
//! `export`, `search reindex`), with rates people read at a glance
//! ("1,234 products/s"). Drawn on standard error only when it is a
//! terminal: piped or captured output stays free of it.

use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};

/// A whole number with thousands separators: `1,234`.
pub fn count(n: usize) -> String {
    HumanCount(n as u64).to_string()
}

/// `1,234 products/s`, `0.5 products/s` under one a second.
fn rate(per_sec: f64, unit: &str) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return format!("– {unit}/s");
    }
    if per_sec < 1.0 {
        return format!("{per_sec:.1} {unit}/s");
    }
    format!("{} {unit}/s", HumanCount(per_sec.round() as u64))
}

fn style(template: &str, unit: &'static str) -> ProgressStyle {
    let fallback = ProgressStyle::default_bar();
    ProgressStyle::with_template(template)
        .unwrap_or(fallback)
        .with_key("rate", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate(state.per_sec(), unit));
        })
}

/// A bar for work of a known size (the total may be set later).
pub fn bar(unit: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(style(&format!("{{bar:40}} {{human_pos}}/{{human_len}} {unit} ({{rate}}, {{eta}} left)"), unit));
    bar
}

/// A counter for work whose size is not known up front.
pub fn counter(what: &str, unit: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(style(&format!("{{spinner}} {{human_pos}} {what} ({{rate}})"), unit));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_numbers() {
        assert_eq!(rate(1234.5678, "products"), "1,235 products/s");
        assert_eq!(rate(12.2, "products"), "12 products/s");
        assert_eq!(rate(0.4, "rows"), "0.4 rows/s");
        assert_eq!(rate(0.0, "products"), "– products/s");
        assert_eq!(rate(f64::NAN, "products"), "– products/s");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
