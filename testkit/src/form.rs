//! `application/x-www-form-urlencoded` for the stand-in servers (query
//! strings and token-request bodies), through the `url` crate's parser.

/// Key-value pairs, percent-decoded, in order.
pub fn parse_form(input: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input.as_bytes())
        .into_owned()
        .collect()
}

/// The first value of `key`.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
