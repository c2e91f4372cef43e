//! Email addresses as the people behind them: one mailbox however its
//! address is spelled, for limits and "once per customer" rules.

/// The mailbox behind an address, so `Ada+1@Example.com` is
/// `ada@example.com`, and for Gmail `a.d.a@googlemail.com` is `ada@gmail.com`.
/// Counting per mailbox, not per spelling, keeps `+tag` variants from
/// multiplying a per-address limit or a once-per-customer code.
pub fn mailbox_key(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else { return email };
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", local.replace('.', "")),
        _ => format!("{local}@{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_is_one_customer_however_it_is_spelled() {
        assert_eq!(mailbox_key("Ada+1@Example.com"), "ada@example.com");
        assert_eq!(mailbox_key("ada@example.com"), "ada@example.com");
        assert_eq!(mailbox_key("a.d.a+x@GoogleMail.com"), "ada@gmail.com");
        assert_eq!(mailbox_key("a.da@example.com"), "a.da@example.com", "dots count outside Gmail");
    }
}
