//! What exactly is signed, and how a saved reply is checked.
//!
//! The signature of a record covers the object it sits in — a dataset reply,
//! or one part of a scenario reply — canonicalised with RFC 8785 (JCS) after
//! removing:
//!
//! - the members `signature`, `status` and `http_status` (a scenario part's
//!   outcome, not the record), and
//! - `source.cache` (how this particular answer was obtained: `hit`, `miss`
//!   or `stale`; it differs per request for the same cached record).
//!
//! So the signed payload of a dataset reply is `{"dataset", "subject",
//! "record", "source": {"department", "issuer", "fetched_at"}, "notice"}`:
//! the record as this client sees it (after its field projection), who issued
//! it, when the department answered, and the usage notice. A cached record is
//! signed once per field projection ([`SignatureMemo`]), not per hit.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::error::SignatureError;
use super::jws::{Jwks, verify_detached};

/// Members of a signed object that the signature does not cover.
pub const UNSIGNED_MEMBERS: [&str; 3] = ["signature", "status", "http_status"];
/// Members of `source` that the signature does not cover.
pub const UNSIGNED_SOURCE_MEMBERS: [&str; 1] = ["cache"];

/// The canonical bytes a signature covers (see the module documentation).
pub fn signing_input(obj: &Map<String, Value>) -> Result<Vec<u8>, SignatureError> {
    let mut signed = obj.clone();
    for m in UNSIGNED_MEMBERS {
        signed.remove(m);
    }
    if let Some(Value::Object(source)) = signed.get_mut("source") {
        for m in UNSIGNED_SOURCE_MEMBERS {
            source.remove(m);
        }
    }
    serde_json_canonicalizer::to_vec(&signed)
        .map_err(|e| SignatureError::NotSigned(format!("cannot canonicalise: {e}")))
}

/// Verifies the `signature` member of one signed object.
pub fn verify_object(obj: &Map<String, Value>, jwks: &Jwks) -> Result<(), SignatureError> {
    let jws = match obj.get("signature") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(SignatureError::Malformed(
                "`signature` is not a string".into(),
            ));
        }
        None => return Err(SignatureError::NotSigned("no `signature` member".into())),
    };
    if obj.get("record").is_none_or(|r| !r.is_object()) {
        return Err(SignatureError::NotSigned("no `record` object".into()));
    }
    let payload = signing_input(obj)?;
    verify_detached(jws, &payload, jwks)
}

/// Checks a saved reply: a dataset reply, or a scenario reply whose `ok`
/// parts each carry a signature. Returns what was verified, or the first
/// failure naming where it is.
pub fn verify_document(doc: &Value, jwks: &Jwks) -> Result<Vec<String>, String> {
    let Value::Object(obj) = doc else {
        return Err("not a signed record: not a JSON object".into());
    };
    if let Some(Value::Object(parts)) = obj.get("parts") {
        let mut verified = Vec::new();
        for (name, part) in parts {
            let Value::Object(p) = part else {
                return Err(format!("part `{name}`: not an object"));
            };
            let signed = p.contains_key("signature") || p.contains_key("record");
            if !signed {
                continue;
            }
            verify_object(p, jwks).map_err(|e| format!("part `{name}`: {e}"))?;
            verified.push(format!("part `{name}`"));
        }
        if verified.is_empty() {
            return Err("not a signed record: no part carries a record".into());
        }
        return Ok(verified);
    }
    verify_object(obj, jwks).map_err(|e| e.to_string())?;
    let what = obj
        .get("dataset")
        .and_then(Value::as_str)
        .map_or_else(|| "record".to_string(), |d| format!("dataset `{d}`"));
    Ok(vec![what])
}

/// Signatures of one cached record, one per field projection, made on first
/// use and kept with the cache entry: a hit reuses them.
#[derive(Debug, Default)]
pub struct SignatureMemo(Mutex<Vec<(String, Arc<str>)>>);

impl SignatureMemo {
    /// The signature for `projection` (a stable name of the client's field
    /// filter), made with `sign` the first time.
    pub fn get_or_sign(&self, projection: &str, sign: impl FnOnce() -> String) -> Arc<str> {
        let Ok(mut memo) = self.0.lock() else {
            return Arc::from(sign());
        };
        if let Some((_, s)) = memo.iter().find(|(p, _)| p == projection) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(sign());
        memo.push((projection.to_string(), s.clone()));
        s
    }

    /// How many projections have been signed (tests).
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    /// True when nothing has been signed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::RecordKeys;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, KeyInit, Mac};
    use serde_json::json;

    fn signed(keys: &RecordKeys, record: Value, cache: &str) -> Value {
        let mut body = json!({
            "dataset": "business-licence",
            "subject": "91120116MA07Q8XJ2K",
            "record": record,
            "source": {"department": "market-supervision", "issuer": "天津市市场监督管理委员会", "fetched_at": "2026-11-30T09:00:00.000001Z"},
            "notice": "For service handling only.",
        });
        let payload = signing_input(body.as_object().unwrap()).unwrap();
        let sig = keys.sign(&payload);
        body["source"]["cache"] = json!(cache);
        body["signature"] = json!(sig);
        body
    }

    #[test]
    fn per_hit_fields_are_outside_the_signature() {
        let keys = RecordKeys::from_seed([1; 32]);
        let mut reply = signed(
            &keys,
            json!({"name": "A", "staff": 12, "rate": 0.5}),
            "miss",
        );
        verify_document(&reply, keys.jwks()).unwrap();
        reply["source"]["cache"] = json!("hit");
        verify_document(&reply, keys.jwks()).unwrap();
    }

    #[test]
    fn one_changed_byte_fails() {
        let keys = RecordKeys::from_seed([1; 32]);
        let reply = signed(&keys, json!({"name": "Acme"}), "miss");
        let text = serde_json::to_string(&reply)
            .unwrap()
            .replace("Acme", "Acmf");
        let changed: Value = serde_json::from_str(&text).unwrap();
        let err = verify_document(&changed, keys.jwks()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn a_signature_moved_to_another_record_fails() {
        let keys = RecordKeys::from_seed([1; 32]);
        let a = signed(&keys, json!({"name": "A"}), "miss");
        let mut b = signed(&keys, json!({"name": "B"}), "miss");
        b["signature"] = a["signature"].clone();
        assert!(verify_document(&b, keys.jwks()).is_err());
    }

    #[test]
    fn none_and_hs256_with_the_public_key_fail() {
        let keys = RecordKeys::from_seed([1; 32]);
        let mut reply = signed(&keys, json!({"name": "A"}), "miss");
        let kid = keys.kid().to_string();
        let payload = signing_input(reply.as_object().unwrap()).unwrap();
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
        reply["signature"] = json!(format!("{h}.."));
        let err = verify_document(&reply, keys.jwks()).unwrap_err();
        assert!(err.contains("`none`"), "{err}");
        // HS256 keyed with the public key bytes (the classic confusion attack).
        let public = keys.jwks().keys[0].x.clone().unwrap();
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#));
        let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(&payload));
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(public.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        reply["signature"] = json!(format!("{h}..{tag}"));
        let err = verify_document(&reply, keys.jwks()).unwrap_err();
        assert!(err.contains("HS256"), "{err}");
    }

    #[test]
    fn another_gateways_key_is_unknown() {
        let keys = RecordKeys::from_seed([1; 32]);
        let other = RecordKeys::from_seed([2; 32]);
        let reply = signed(&other, json!({"name": "A"}), "miss");
        let err = verify_document(&reply, keys.jwks()).unwrap_err();
        assert!(err.contains("no key"), "{err}");
    }

    #[test]
    fn scenario_parts_verify_one_by_one() {
        let keys = RecordKeys::from_seed([1; 32]);
        let mut part = signed(&keys, json!({"name": "A"}), "hit");
        part["status"] = json!("ok");
        part["http_status"] = json!(200);
        let mut doc = json!({"scenario": "open-restaurant", "complete": false, "parts": {
            "business-licence": part,
            "fire-safety-inspection": {"status": "missing", "http_status": 404, "detail": "no record"},
        }});
        assert_eq!(
            verify_document(&doc, keys.jwks()).unwrap(),
            vec!["part `business-licence`"]
        );
        doc["parts"]["business-licence"]["record"]["name"] = json!("B");
        let err = verify_document(&doc, keys.jwks()).unwrap_err();
        assert!(err.starts_with("part `business-licence`"), "{err}");
    }

    #[test]
    fn jcs_orders_members_and_formats_numbers_per_rfc8785() {
        let v = json!({"b": 1.0, "a": [1e21, 0.000001, -0.0, 1e-7], "é": "x", "\u{20ac}": 2});
        let out = String::from_utf8(serde_json_canonicalizer::to_vec(&v).unwrap()).unwrap();
        assert_eq!(out, r#"{"a":[1e+21,0.000001,0,1e-7],"b":1,"é":"x","€":2}"#);
    }

    #[test]
    fn memo_signs_each_projection_once() {
        let memo = SignatureMemo::default();
        let mut n = 0;
        let a = memo.get_or_sign("*", || {
            n += 1;
            "sig-a".into()
        });
        let again = memo.get_or_sign("*", || unreachable!());
        assert_eq!(a, again);
        memo.get_or_sign("name,uscc", || "sig-b".into());
        assert_eq!((n, memo.len()), (1, 2));
    }
}
