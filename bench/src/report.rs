//! The Markdown the benchmark reports share: tables of metric, Emporium,
//! reference and ratio (Emporium ÷ reference), and the machine they ran on.

pub fn num(v: f64, digits: usize) -> String {
    if v > 0.0 { format!("{v:.digits$}") } else { "-".into() }
}

pub fn ratio(ours: f64, reference: f64) -> String {
    if ours > 0.0 && reference > 0.0 { format!("{:.2}", ours / reference) } else { "-".into() }
}

pub fn table(title: &str, rows: &[[String; 4]]) -> String {
    let mut out = format!("\n### {title}\n\n| metric | Emporium | reference | ratio |\n|---|---:|---:|---:|\n");
    for [metric, ours, reference, r] in rows {
        out += &format!("| {metric} | {ours} | {reference} | {r} |\n");
    }
    out
}

pub fn row(metric: &str, ours: String, reference: String, ratio: String) -> [String; 4] {
    [metric.to_owned(), ours, reference, ratio]
}

pub fn first_error(what: &str, e: &Option<String>) -> String {
    e.as_ref().map_or_else(String::new, |e| {
        let e: String = e.replace(['`', '\n', '|'], " ").chars().take(200).collect();
        format!("\nFirst error ({what}): `{e}`\n")
    })
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()));
    format!("{}, {cores} cores", model.unwrap_or_else(|| "unknown CPU".into()))
}
