//! Macro expansion: where a click sends the customer, and what an affiliate's
//! postback URL becomes when we notify them.
//!
//! Macros are `{name}`; every value put in is percent-encoded, so a sub-ID of
//! `a&b=c` can never add a parameter of its own. Unknown macros are left as they
//! are, so a typo shows up in the URL instead of silently vanishing.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but the unreserved characters of RFC 3986 is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Replaces each `{name}` whose name `lookup` knows by its URL-encoded value.
pub fn expand<'a>(template: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    expand_encoded(template, lookup, encode_component)
}

/// Replaces each `{name}` whose name `lookup` knows by its value inside a
/// JSON string (escaped, without the quotes: the template writes them).
pub fn expand_json<'a>(template: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    expand_encoded(template, lookup, |v| {
        let quoted = serde_json::Value::String(v.to_owned()).to_string();
        quoted[1..quoted.len() - 1].to_owned()
    })
}

fn expand_encoded<'a>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
    encode: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if close > 0
                    && after[..close]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                let name = &after[..close];
                match lookup(name) {
                    Some(value) => out.push_str(&encode(value)),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The values a click puts into a destination URL.
#[derive(Debug, Clone, Default)]
pub struct ClickMacros<'a> {
    pub click_id: &'a str,
    pub affiliate_id: &'a str,
    pub program_id: &'a str,
    pub subs: [Option<&'a str>; 5],
}

impl<'a> ClickMacros<'a> {
    fn lookup(&self, name: &str) -> Option<&'a str> {
        Some(match name {
            "click_id" => self.click_id,
            "affiliate_id" => self.affiliate_id,
            "program_id" => self.program_id,
            "sub1" => self.subs[0].unwrap_or(""),
            "sub2" => self.subs[1].unwrap_or(""),
            "sub3" => self.subs[2].unwrap_or(""),
            "sub4" => self.subs[3].unwrap_or(""),
            "sub5" => self.subs[4].unwrap_or(""),
            _ => return None,
        })
    }
}

/// Where a click redirects: the destination with its macros expanded; when it has
/// no `{click_id}`, the click id is appended as `param=` (keeping the
/// destination's own query and fragment).
pub fn click_redirect(destination: &str, param: &str, m: &ClickMacros<'_>) -> String {
    let expanded = expand(destination, |n| m.lookup(n));
    if destination.contains("{click_id}") {
        return expanded;
    }
    let (base, fragment) = match expanded.find('#') {
        Some(i) => expanded.split_at(i),
        None => (expanded.as_str(), ""),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    format!(
        "{base}{sep}{}={}{fragment}",
        encode_component(param),
        encode_component(m.click_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> ClickMacros<'static> {
        ClickMacros {
            click_id: "01abc",
            affiliate_id: "aff_1",
            program_id: "prg_1",
            subs: [Some("spring sale"), None, Some("a&b=c"), None, None],
        }
    }

    #[test]
    fn appends_the_click_id_when_there_is_no_macro() {
        assert_eq!(
            click_redirect("https://shop.example/pro", "click_id", &m()),
            "https://shop.example/pro?click_id=01abc"
        );
        assert_eq!(
            click_redirect("https://shop.example/pro?x=1#top", "cid", &m()),
            "https://shop.example/pro?x=1&cid=01abc#top"
        );
    }

    #[test]
    fn expands_macros_encoded() {
        assert_eq!(
            click_redirect(
                "https://s.example/?c={click_id}&s={sub1}&t={sub3}&u={sub2}&a={affiliate_id}&{nope}",
                "click_id",
                &m()
            ),
            "https://s.example/?c=01abc&s=spring%20sale&t=a%26b%3Dc&u=&a=aff_1&{nope}"
        );
    }

    #[test]
    fn stray_braces_survive() {
        assert_eq!(expand("a{b{c}d}", |_| Some("X")), "a{bXd}");
        assert_eq!(expand("{", |_| Some("X")), "{");
        assert_eq!(expand("{}", |_| Some("X")), "{}");
    }
}
