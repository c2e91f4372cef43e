//! The demo shop's selling rules: shipping to the US and the EU, their
//! taxes, and a welcome code, so a guest can check out with nothing set up.
//! Safe to run on every start: existing rows are left alone.

use kernel::id::{DiscountId, ShippingMethodId, TaxRateId};
use platform::db::{Db, DbError};
use platform::on_db;

use crate::domain::{Discount, DiscountValue, Rate, ShippingMethod, WeightBand};
use crate::store::{self, DiscountRow, ShippingRow};

const EU: &str = "AT,BE,BG,HR,CY,CZ,DK,EE,FI,FR,DE,GR,HU,IE,IT,LV,LT,LU,MT,NL,PL,PT,RO,SK,SI,ES,SE";

/// (country, region, name, basis points, shipping taxed)
const TAXES: [(&str, &str, &str, i64, bool); 12] = [
    ("US", "CA", "California sales tax", 725, false),
    ("US", "NY", "New York sales tax", 400, true),
    ("US", "TX", "Texas sales tax", 625, true),
    ("US", "WA", "Washington sales tax", 650, true),
    ("DE", "", "MwSt", 1900, true),
    ("FR", "", "TVA", 2000, true),
    ("NL", "", "BTW", 2100, true),
    ("IT", "", "IVA", 2200, true),
    ("ES", "", "IVA", 2100, true),
    ("IE", "", "VAT", 2300, true),
    ("AT", "", "USt", 2000, true),
    ("BE", "", "BTW", 2100, true),
];

pub async fn load(db: &Db, currency: &str) -> Result<(), DbError> {
    let count: i64 = on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM shipping_methods").fetch_one(pool).await)?;
    if count > 0 {
        return Ok(());
    }
    let methods = [
        ("Standard (US)", "US", Rate::Weight(vec![
            WeightBand { up_to_grams: 1000, amount: 495 },
            WeightBand { up_to_grams: 5000, amount: 895 },
            WeightBand { up_to_grams: 30000, amount: 1995 },
        ]), Some(7500), 3, 5),
        ("Express (US)", "US", Rate::Flat(1995), None, 1, 2),
        ("Europe", EU, Rate::Weight(vec![
            WeightBand { up_to_grams: 2000, amount: 1295 },
            WeightBand { up_to_grams: 30000, amount: 2495 },
        ]), Some(15000), 5, 9),
        ("International", "GB,CA,AU,NZ,JP,CH,NO", Rate::Flat(2995), None, 7, 14),
    ];
    for (name, countries, rate, free_above, min_days, max_days) in methods {
        let method = ShippingMethod {
            id: ShippingMethodId::new().to_string(),
            name: name.into(),
            countries: countries.split(',').map(str::to_owned).collect(),
            currency: currency.into(),
            rate,
            free_above,
            min_days,
            max_days,
        };
        store::save_shipping_method(db, &ShippingRow { method, active: true }).await?;
    }
    for (country, region, name, bp, shipping) in TAXES {
        let id = TaxRateId::new().to_string();
        store::save_tax_rate(db, &(id, country.into(), region.into(), name.into(), bp, shipping)).await?;
    }
    let welcome = Discount {
        code: "WELCOME10".into(),
        value: DiscountValue::Percentage { percent_off: 10 },
        currency: None,
        product_ids: vec![],
        category_ids: vec![],
        min_subtotal: None,
        free_shipping: false,
        starts_ms: None,
        ends_ms: None,
        usage_limit: None,
        times_used: 0,
        active: true,
    };
    store::save_discount(db, &DiscountRow { id: DiscountId::new().to_string(), rule: welcome, per_customer_limit: Some(1), created_ms: platform::db::now_ms() }).await?;
    Ok(())
}
