//! Request bodies and queries as the API takes them: a value that does
//! not deserialize (malformed JSON, a wrong type, an unknown or missing
//! field, a number out of its type's range) is a 400 problem whose
//! `field` is the JSON pointer of the failing member, as for 422s.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};

use crate::problem::Problem;

/// A JSON body (`Content-Type: application/json`).
pub struct ApiJson<T>(pub T);

/// A query string.
pub struct ApiQuery<T>(pub T);

/// One JSON pointer token (RFC 6901: `~` and `/` escaped).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer of the member an error is about: the path reached,
/// then the member an unknown- or missing-field error names.
pub fn pointer(path: &Path, message: &str) -> String {
    let mut p = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => p.push_str(&format!("/{index}")),
            Segment::Map { key } => p.push_str(&format!("/{}", token(key))),
            Segment::Enum { variant } => p.push_str(&format!("/{}", token(variant))),
            Segment::Unknown => {}
        }
    }
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(prefix).nth(1) {
            if let Some(name) = rest.split('`').next() {
                let last = format!("/{}", token(name));
                if !p.ends_with(&last) {
                    p.push_str(&last);
                }
            }
        }
    }
    p
}

fn bad(field: String, detail: String) -> Problem {
    Problem {
        field: Some(field),
        ..Problem::bad_request(detail)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .is_some_and(|t| {
                t.eq_ignore_ascii_case("application/json")
                    || (t.starts_with("application/") && t.ends_with("+json"))
            });
        if !json {
            return Err(Problem {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16(),
                title: "Unsupported media type".into(),
                ..Problem::bad_request("send the body as Content-Type: application/json")
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| Problem {
            status: e.status().as_u16(),
            ..Problem::bad_request(e.body_text())
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => match de.end() {
                Ok(()) => Ok(Self(v)),
                Err(e) => Err(bad(
                    String::new(),
                    format!("trailing characters after the JSON value: {e}"),
                )),
            },
            Err(e) => {
                let message = e.inner().to_string();
                let mut field = pointer(e.path(), &message);
                if e.inner().is_data() {
                    // Inside an internally tagged enum serde buffers the
                    // object, so the path stops at it: find the member
                    // holding the value the error quotes.
                    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        field = refine(&body, field, &message);
                    }
                }
                Err(bad(field, format!("{}: {message}", e.path())))
            }
        }
    }
}

/// `field` made precise when it names an object and the error quotes a
/// value (``invalid value: integer `-1` ``, `invalid type: string "x"`)
/// that exactly one of its members holds.
fn refine(body: &serde_json::Value, field: String, message: &str) -> String {
    let quoted = message
        .split_once('`')
        .and_then(|(_, r)| r.split_once('`'))
        .map(|(v, _)| v.to_owned())
        .or_else(|| {
            message
                .split_once("string \"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(v, _)| serde_json::Value::String(v.to_owned()).to_string())
        });
    let (Some(quoted), Some(serde_json::Value::Object(members))) = (quoted, body.pointer(&field))
    else {
        return field;
    };
    let mut hits = members.iter().filter(|(_, v)| v.to_string() == quoted);
    match (hits.next(), hits.next()) {
        (Some((k, _)), None) => format!("{field}/{}", token(k)),
        _ => field,
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(Self)
            .map_err(|e| {
                let field = pointer(e.path(), &e.inner().to_string());
                bad(field, format!("query {}: {}", e.path(), e.inner()))
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        list: Vec<Inner>,
        name: String,
    }

    fn field_of(json: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(json);
        let e = serde_path_to_error::deserialize::<_, Outer>(&mut de).unwrap_err();
        pointer(e.path(), &e.inner().to_string())
    }

    #[test]
    fn pointers_name_the_failing_member() {
        assert_eq!(
            field_of(r#"{"list":[{"n":1},{"n":"x"}],"name":"a"}"#),
            "/list/1/n"
        );
        assert_eq!(field_of(r#"{"list":[{"n":300}],"name":"a"}"#), "/list/0/n");
        assert_eq!(field_of(r#"{"list":[],"name":"a","extra":1}"#), "/extra");
        assert_eq!(
            field_of(r#"{"list":[{"n":1,"x~/y":2}],"name":"a"}"#),
            "/list/0/x~0~1y"
        );
        assert_eq!(field_of(r#"{"list":[]}"#), "/name");
        assert_eq!(field_of(r#"{"list":[],"name":7}"#), "/name");
    }
}
