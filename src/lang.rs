//! Text for people in two languages (Chinese and English), and the choice
//! between them from a request's `Accept-Language` (RFC 9110 §12.5.4).
//!
//! Chinese is the default: the service hall and its legal texts are Chinese,
//! and a caller that states no preference (or only unsupported languages)
//! gets the authoritative wording.

use serde::{Deserialize, Serialize};

/// A language the guides are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Chinese (the default).
    #[default]
    Zh,
    /// English.
    En,
}

impl Lang {
    /// The language tag answered in `Content-Language` and the `lang` field.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// Picks the language for an `Accept-Language` value. Each range's
    /// primary subtag decides (`zh-CN` and `zh-Hant` ask for Chinese,
    /// `en-GB` for English); a language's weight is the highest `q` among
    /// its ranges, else that of `*`; `q=0` means "not this one". The higher
    /// weight wins, a tie goes to the range named first; no header, no
    /// supported language, or a malformed header: Chinese.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::default();
        };
        // (weight, position of first mention) per language; `*` separately.
        let mut zh: Option<(f32, usize)> = None;
        let mut en: Option<(f32, usize)> = None;
        let mut star: Option<(f32, usize)> = None;
        for (pos, item) in header.split(',').enumerate().take(32) {
            let mut pieces = item.split(';');
            let range = pieces.next().unwrap_or_default().trim();
            let mut q = 1.0f32;
            for p in pieces {
                let p = p.trim();
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    match v.trim().parse::<f32>() {
                        Ok(x) if (0.0..=1.0).contains(&x) => q = x,
                        // A malformed weight makes the range meaningless.
                        _ => q = -1.0,
                    }
                }
            }
            if q < 0.0 || range.is_empty() {
                continue;
            }
            let primary = range
                .split('-')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let slot = match primary.as_str() {
                "zh" => &mut zh,
                "en" => &mut en,
                "*" => &mut star,
                _ => continue,
            };
            *slot = Some(match *slot {
                Some((w, first)) => (w.max(q), first),
                None => (q, pos),
            });
        }
        let zh = zh.or(star);
        let en = en.or(star);
        match (zh, en) {
            (Some((wz, pz)), Some((we, pe))) if we > wz || (we == wz && pe < pz && we > 0.0) => {
                Lang::En
            }
            (None, Some((we, _))) if we > 0.0 => Lang::En,
            _ => Lang::Zh,
        }
    }
}

/// Raw `{ zh = "...", en = "..." }` as written in configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalized {
    /// Chinese text.
    pub zh: Option<String>,
    /// English text.
    pub en: Option<String>,
}

/// Validated text in both languages (neither blank).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Localized {
    /// Chinese.
    pub zh: String,
    /// English.
    pub en: String,
}

impl Localized {
    /// The text in `lang`.
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Zh => &self.zh,
            Lang::En => &self.en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_by_default() {
        assert_eq!(Lang::negotiate(None), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("fr, de;q=0.5")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("*")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some(";;;,,q=")), Lang::Zh);
    }

    #[test]
    fn primary_subtag_and_weights_decide() {
        assert_eq!(Lang::negotiate(Some("en")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en-GB,en;q=0.9")), Lang::En);
        assert_eq!(Lang::negotiate(Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("zh;q=0.5, en;q=0.8")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en;q=0.5, zh-Hant;q=0.8")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("fr, en;q=0.1")), Lang::En);
        // q=0: "not this one".
        assert_eq!(Lang::negotiate(Some("zh;q=0, *;q=0.1")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en;q=0")), Lang::Zh);
        // Equal weights: the first named wins.
        assert_eq!(Lang::negotiate(Some("en, zh")), Lang::En);
        assert_eq!(Lang::negotiate(Some("zh, en")), Lang::Zh);
        // A malformed weight voids its range only.
        assert_eq!(Lang::negotiate(Some("zh;q=2, en;q=0.3")), Lang::En);
        assert_eq!(Lang::negotiate(Some("EN-us;Q=0.7")), Lang::En);
    }
}
