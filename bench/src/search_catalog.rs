//! The search benchmark's synthetic catalog and what is asked of it: made
//! up from word lists with a fixed-seed splitmix64, so every run indexes the
//! same products and asks the same questions.

use std::collections::BTreeMap;

use search::ProductDoc;

/// A kind of product: its title noun, the word a shopper types for it (a
/// token of the title under both Emporium's analyzer and tantivy's default
/// one), its SKU prefix, its department and its sub-category.
type Noun = (&'static str, &'static str, &'static str, &'static str, &'static str);

const NOUNS: &[Noun] = &[
    ("T-Shirt", "shirt", "TSH", "Apparel", "Tops"),
    ("Hoodie", "hoodie", "HOD", "Apparel", "Tops"),
    ("Sweater", "sweater", "SWT", "Apparel", "Tops"),
    ("Cardigan", "cardigan", "CRD", "Apparel", "Tops"),
    ("Blouse", "blouse", "BLS", "Apparel", "Tops"),
    ("Jacket", "jacket", "JKT", "Apparel", "Outerwear"),
    ("Parka", "parka", "PRK", "Apparel", "Outerwear"),
    ("Vest", "vest", "VST", "Apparel", "Outerwear"),
    ("Raincoat", "raincoat", "RNC", "Apparel", "Outerwear"),
    ("Jeans", "jeans", "JNS", "Apparel", "Bottoms"),
    ("Chinos", "chinos", "CHN", "Apparel", "Bottoms"),
    ("Shorts", "shorts", "SHR", "Apparel", "Bottoms"),
    ("Skirt", "skirt", "SKT", "Apparel", "Bottoms"),
    ("Leggings", "leggings", "LEG", "Apparel", "Bottoms"),
    ("Trail Running Shoes", "shoes", "RUN", "Footwear", "Running"),
    ("Sneakers", "sneakers", "SNK", "Footwear", "Casual"),
    ("Loafers", "loafers", "LOF", "Footwear", "Casual"),
    ("Sandals", "sandals", "SND", "Footwear", "Casual"),
    ("Slippers", "slippers", "SLP", "Footwear", "Casual"),
    ("Hiking Boots", "boots", "BOT", "Footwear", "Hiking"),
    ("Backpack", "backpack", "BPK", "Accessories", "Bags"),
    ("Tote Bag", "tote", "TOT", "Accessories", "Bags"),
    ("Wallet", "wallet", "WLT", "Accessories", "Small Goods"),
    ("Belt", "belt", "BLT", "Accessories", "Small Goods"),
    ("Scarf", "scarf", "SCF", "Accessories", "Winter"),
    ("Beanie", "beanie", "BNE", "Accessories", "Winter"),
    ("Gloves", "gloves", "GLV", "Accessories", "Winter"),
    ("Mug", "mug", "MUG", "Home", "Kitchen"),
    ("Kettle", "kettle", "KTL", "Home", "Kitchen"),
    ("Skillet", "skillet", "SKL", "Home", "Kitchen"),
    ("Teapot", "teapot", "TPT", "Home", "Kitchen"),
    ("Cutting Board", "board", "CTB", "Home", "Kitchen"),
    ("Pillow", "pillow", "PLW", "Home", "Bedding"),
    ("Blanket", "blanket", "BLK", "Home", "Bedding"),
    ("Duvet Cover", "duvet", "DUV", "Home", "Bedding"),
    ("Quilt", "quilt", "QLT", "Home", "Bedding"),
    ("Tent", "tent", "TNT", "Outdoor", "Camping"),
    ("Lantern", "lantern", "LTN", "Outdoor", "Camping"),
    ("Hammock", "hammock", "HMK", "Outdoor", "Camping"),
    ("Water Bottle", "bottle", "BTL", "Outdoor", "Hydration"),
];

const ADJECTIVES: &[&str] = &[
    "Organic", "Waterproof", "Classic", "Lightweight", "Vintage", "Everyday", "Relaxed", "Essential", "Heritage", "Modern",
    "Coastal", "Alpine", "Urban", "Handmade", "Recycled", "Insulated", "Breathable", "Packable", "Slim", "Oversized",
    "Rugged", "Soft", "Cozy", "Premium", "Stretch", "Quilted", "Washed", "Brushed", "Tailored", "Minimalist",
];

const MATERIALS: &[&str] = &[
    "Cotton", "Linen", "Wool", "Merino", "Denim", "Hemp", "Bamboo", "Leather", "Suede", "Canvas", "Fleece", "Nylon",
    "Polyester", "Cashmere", "Ceramic", "Oak", "Walnut", "Steel", "Cork", "Silk",
];

/// Brands are a prefix and a suffix: 50 of them.
const BRAND_HEADS: &[&str] = &["North", "Pine", "Stone", "River", "Summit", "Cedar", "Harbor", "Iron", "Maple", "Fox"];
const BRAND_TAILS: &[&str] = &["wind", "field", "works", "craft", "line"];

const COLORS: &[&str] = &["Black", "White", "Navy", "Grey", "Olive", "Red", "Blue", "Green", "Beige", "Brown", "Pink", "Yellow"];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL", "XXL"];
const SHOE_SIZES: &[&str] = &["38", "39", "40", "41", "42", "43", "44", "45"];
const AUDIENCES: &[&str] = &["Men", "Women", "Kids"];
const TAGS: &[&str] = &["new", "sale", "bestseller", "eco", "gift", "limited", "clearance", "online-only"];

/// Words the rest of a description is made of.
const FILLER: &[&str] = &[
    "comfortable", "durable", "designed", "crafted", "finish", "stitching", "fit", "care", "machine", "wash", "cold",
    "season", "travel", "weekend", "layer", "pockets", "detail", "quality", "built", "to", "last", "gentle", "warm",
    "cool", "weather", "ready", "perfect", "easy", "feel", "with", "and", "for", "every", "day", "trip", "city",
    "mountain", "home", "office", "reinforced", "seams", "natural", "fibres", "responsibly", "sourced", "tested",
    "washable", "timeless", "shape", "colour", "fast", "drying", "light", "packs", "small", "holds", "up", "years",
];

/// splitmix64: small, fast and the same everywhere (no security use).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

pub fn brands() -> Vec<String> {
    BRAND_HEADS.iter().flat_map(|h| BRAND_TAILS.iter().map(move |t| format!("{h}{t}"))).collect()
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// `count` active products, the same every run.
pub fn products(count: usize) -> Vec<ProductDoc> {
    let brands = brands();
    let mut rng = Rng::new(0x5EED_CA7A);
    let mut sku = 0usize;
    (0..count).map(|i| product(&mut rng, &brands, i, &mut sku)).collect()
}

fn product(rng: &mut Rng, brands: &[String], i: usize, sku: &mut usize) -> ProductDoc {
    let &(noun, _, code, department, sub) = rng.pick(NOUNS);
    let adjective = *rng.pick(ADJECTIVES);
    let material = *rng.pick(MATERIALS);
    let brand = rng.pick(brands).clone();
    let title = format!("{adjective} {material} {noun}");
    // The product's own category first, then its ancestors, as the catalog feed lists them.
    let mut path = vec![department.to_owned(), sub.to_owned()];
    let sizes = match department {
        "Apparel" => Some(SIZES),
        "Footwear" => Some(SHOE_SIZES),
        _ => None,
    };
    if sizes.is_some() {
        path.push((*rng.pick(AUDIENCES)).to_owned());
    }
    let ids: Vec<String> = (1..=path.len()).map(|n| slug(&path[..n].join(" "))).collect();
    let mut attributes = BTreeMap::new();
    attributes.insert("color".to_owned(), (*rng.pick(COLORS)).to_owned());
    attributes.insert("size".to_owned(), sizes.map_or("One Size", |s| *rng.pick(s)).to_owned());
    attributes.insert("material".to_owned(), material.to_lowercase());
    let mut tags = vec![(*rng.pick(TAGS)).to_owned()];
    if rng.chance(40) {
        let second = (*rng.pick(TAGS)).to_owned();
        if !tags.contains(&second) {
            tags.push(second);
        }
    }
    let variants = 1 + rng.below(3);
    let skus = (0..variants)
        .map(|_| {
            *sku += 1;
            format!("{code}-{:06}", *sku % 1_000_000)
        })
        .collect();
    let description = description(rng, adjective, material, noun, &brand);
    ProductDoc {
        id: format!("prd_{i:07}"),
        slug: format!("{}-{i}", slug(&title)),
        status: "active".into(),
        title,
        brand: Some(brand),
        tags,
        category_ids: ids.into_iter().rev().collect(),
        category_names: path.into_iter().rev().collect(),
        attributes,
        description,
        skus,
        price: Some(500 + rng.below(49_501) as i64),
        in_stock: rng.chance(85),
        created_ms: 1_700_000_000_000 + i as i64 * 60_000,
        thumbnail: None,
    }
}

/// About 30 words: what it is, what it goes with, then filler.
fn description(rng: &mut Rng, adjective: &str, material: &str, noun: &str, brand: &str) -> String {
    let other = rng.pick(NOUNS).0;
    let mut text = format!(
        "The {} {} {} from {brand}. Pairs well with the {}.",
        adjective.to_lowercase(),
        material.to_lowercase(),
        noun.to_lowercase(),
        other.to_lowercase()
    );
    let target = 26 + rng.below(9);
    let mut count = text.split_whitespace().count();
    while count < target {
        text.push(' ');
        let word: &&str = rng.pick(FILLER);
        text.push_str(word);
        count += 1;
    }
    text.push('.');
    text
}

/// What is measured, in the order it is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OneWord,
    MultiWord,
    Typo,
    Faceted,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::OneWord, Kind::MultiWord, Kind::Typo, Kind::Faceted];

    pub fn label(self) -> &'static str {
        match self {
            Kind::OneWord => "one word",
            Kind::MultiWord => "two words",
            Kind::Typo => "typo",
            Kind::Faceted => "faceted",
        }
    }
}

/// One search as the shopper makes it; both engines are asked the same.
pub struct Probe {
    pub kind: Kind,
    /// Lower case, as typed.
    pub q: String,
    pub brand: Option<String>,
    /// `[min, max)` in minor units.
    pub price: Option<(i64, i64)>,
}

/// Shopper words of 4–7 letters: the ones both engines allow one edit on.
fn typo_words() -> Vec<&'static str> {
    NOUNS.iter().map(|n| n.1).filter(|w| (4..=7).contains(&w.len())).collect()
}

/// `word` with two neighbouring letters that differ swapped.
pub fn swap_letters(rng: &mut Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let spots: Vec<usize> = (0..chars.len().saturating_sub(1)).filter(|&i| chars[i] != chars[i + 1]).collect();
    if let Some(&i) = spots.get(rng.below(spots.len())) {
        chars.swap(i, i + 1);
    }
    chars.into_iter().collect()
}

/// `count` searches of one kind, the same every run.
pub fn probes(kind: Kind, count: usize) -> Vec<Probe> {
    let brands = brands();
    let typos = typo_words();
    let mut rng = Rng::new(0xC0FFEE ^ kind as u64);
    (0..count)
        .map(|_| {
            let word = rng.pick(NOUNS).1;
            let mut probe = Probe { kind, q: word.to_owned(), brand: None, price: None };
            match kind {
                Kind::OneWord => {}
                Kind::MultiWord => probe.q = format!("{} {word}", rng.pick(ADJECTIVES).to_lowercase()),
                Kind::Typo => {
                    let word = *rng.pick(&typos);
                    probe.q = swap_letters(&mut rng, word);
                }
                Kind::Faceted => {
                    probe.brand = Some(rng.pick(&brands).clone());
                    let min = *rng.pick(&[0i64, 2500, 5000, 10_000, 20_000]);
                    probe.price = Some((min, min + *rng.pick(&[5000i64, 10_000, 20_000])));
                }
            }
            probe
        })
        .collect()
}

/// `count` things typed into the search box so far: the first 2–5 letters
/// of a shopper word.
pub fn prefixes(count: usize) -> Vec<String> {
    let mut rng = Rng::new(0xAB0DE);
    (0..count)
        .map(|_| {
            let word = rng.pick(NOUNS).1;
            word.chars().take(2 + rng.below(4)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_the_same_every_run() {
        assert_eq!(products(50), products(50));
        let all = products(1);
        let p = &all[0];
        assert_eq!(p.category_ids.len(), p.category_names.len());
        assert!(p.skus.iter().all(|s| s.len() == 10 && s.as_bytes()[3] == b'-'));
    }

    #[test]
    fn fifty_brands() {
        let mut b = brands();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), 50);
    }

    #[test]
    fn typos_are_one_edit_away() {
        for p in probes(Kind::Typo, 200) {
            let original = typo_words().into_iter().find(|w| search::query::distance(w, &p.q) == 1);
            assert!(original.is_some(), "{}", p.q);
            assert!(!typo_words().contains(&p.q.as_str()), "{}", p.q);
        }
    }

    #[test]
    fn every_shopper_word_is_in_its_title() {
        for (title, word, ..) in NOUNS {
            assert!(search::query::words(title).contains(&(*word).to_owned()), "{title}");
        }
    }
}
