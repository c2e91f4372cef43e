//! Product descriptions: Markdown (with the HTML Shopify exports), rendered
//! to HTML a browser can show without risk — scripts, event handlers,
//! styles and `javascript:` links never survive.

use std::sync::LazyLock;

use pulldown_cmark::{Options, Parser, html};

/// The cleaner, made once: building one sets up its tag and attribute
/// tables, which cost more than cleaning a short description.
static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder.link_rel(Some("noopener noreferrer nofollow"));
    builder
});

pub fn render(markdown: &str) -> String {
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, parser);
    CLEANER.clean(&unsafe_html).to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_becomes_html() {
        let html = render("# Soft tee\n\n**Organic** cotton.\n\n- S\n- M");
        assert!(html.contains("<h1>Soft tee</h1>"), "{html}");
        assert!(html.contains("<strong>Organic</strong>"), "{html}");
        assert!(html.contains("<li>S</li>"), "{html}");
    }

    #[test]
    fn nothing_dangerous_survives() {
        let html = render(
            "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3))\n\n<p style=\"x\" onclick=\"y\">hi</p>",
        );
        for bad in ["<script", "onerror", "javascript:", "onclick", "style="] {
            assert!(!html.contains(bad), "{bad} survived in {html}");
        }
        assert!(html.contains("hi"));
    }

    #[test]
    fn shopify_html_bodies_keep_their_shape() {
        let html = render("<p>Made of <em>linen</em>.</p><ul><li>Breathes</li></ul>");
        assert!(html.contains("<em>linen</em>") && html.contains("<li>Breathes</li>"), "{html}");
    }
}
