//! Server-rendered HTML: the page templates compiled into the binary, rendered with
//! minijinja, which escapes every value in `.html` templates.

use minijinja::{AutoEscape, Environment, Value};
use serde::Serialize;

use crate::assets::Assets;

/// Every template, by the name pages and `{% extends %}` use.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("player.html", include_str!("../templates/player.html")),
    ("error.html", include_str!("../templates/error.html")),
    (
        "admin/base.html",
        include_str!("../templates/admin/base.html"),
    ),
    (
        "admin/form_macros.html",
        include_str!("../templates/admin/form_macros.html"),
    ),
    (
        "admin/login.html",
        include_str!("../templates/admin/login.html"),
    ),
    (
        "admin/index.html",
        include_str!("../templates/admin/index.html"),
    ),
    (
        "admin/title_form.html",
        include_str!("../templates/admin/title_form.html"),
    ),
    (
        "admin/upload.html",
        include_str!("../templates/admin/upload.html"),
    ),
    (
        "admin/upload_job.html",
        include_str!("../templates/admin/upload_job.html"),
    ),
    (
        "admin/channel_form.html",
        include_str!("../templates/admin/channel_form.html"),
    ),
];

/// The compiled templates, with the asset URLs every page links to.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every template; a syntax error names the template and line.
    pub fn new(assets: &Assets) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for &(name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        env.add_global("assets", Value::from_serialize(assets.urls()));
        env.set_formatter(html_formatter);
        Ok(Self { env })
    }

    /// Renders `name` with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

/// Escapes values for HTML like minijinja does, except `/`: URLs stay readable in the page
/// source (`data-src="/stream/…"`), and `/` has no special meaning in text or quoted
/// attributes.
fn html_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() != AutoEscape::Html
        || value.is_safe()
        || value.is_undefined()
        || value.is_none()
    {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            other => escaped.push(other),
        }
    }
    out.write_str(&escaped).map_err(minijinja::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let templates = Templates::new(&Assets::embedded()).unwrap();
        let html = templates
            .render(
                "error.html",
                minijinja::context! { page_title => "x", status => 400, message => "<script>alert(1)</script>" },
            )
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"));
        let html = templates
            .render(
                "error.html",
                minijinja::context! { page_title => "x", status => 400, message => "a/b \"q\" 'a' & c" },
            )
            .unwrap();
        assert!(
            html.contains("a/b &quot;q&quot; &#x27;a&#x27; &amp; c"),
            "{html}"
        );
    }
}
