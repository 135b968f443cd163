//! Name rules shared by validation and selectors: RFC 1123 labels and subdomains, RFC 1035
//! labels, qualified names (label keys), label values, IANA service (port) names, environment
//! variable names and config keys. Each check returns the first problem in Kubernetes' words.

const DNS1123_LABEL_MAX_LEN: usize = 63;
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
const QUALIFIED_NAME_MAX_LEN: usize = 63;
const LABEL_VALUE_MAX_LEN: usize = 63;
const IANA_SVC_NAME_MAX_LEN: usize = 15;
const CONFIG_KEY_MAX_LEN: usize = 253;

const DNS1123_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_RULE: &str = "a DNS-1035 label must consist of lower case alphanumeric \
    characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' \
    or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric \
    characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// The outcome of a name check: the first rule broken.
pub(crate) type NameCheck = Result<(), String>;

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without a length limit.
fn is_label_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && bytes.iter().all(|&b| is_lower_alnum(b) || b == b'-')
        }
        _ => false,
    }
}

pub(crate) fn dns1123_label(text: &str) -> NameCheck {
    if text.len() > DNS1123_LABEL_MAX_LEN {
        return Err(too_long(DNS1123_LABEL_MAX_LEN));
    }
    if !is_label_shape(text) {
        return Err(DNS1123_LABEL_RULE.to_owned());
    }
    Ok(())
}

pub(crate) fn dns1123_subdomain(text: &str) -> NameCheck {
    if text.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(too_long(DNS1123_SUBDOMAIN_MAX_LEN));
    }
    if !text.split('.').all(is_label_shape) {
        return Err(DNS1123_SUBDOMAIN_RULE.to_owned());
    }
    Ok(())
}

pub(crate) fn dns1035_label(text: &str) -> NameCheck {
    if text.len() > DNS1123_LABEL_MAX_LEN {
        return Err(too_long(DNS1123_LABEL_MAX_LEN));
    }
    let starts_with_letter = text.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !starts_with_letter || !is_label_shape(text) {
        return Err(DNS1035_LABEL_RULE.to_owned());
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, i.e. non-empty.
fn is_qualified_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A label, annotation, taint or topology key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn qualified_name(text: &str) -> NameCheck {
    let (prefix, name) = match text.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    if name.contains('/') {
        return Err(
            "a qualified name must consist of a name part with an optional DNS \
            subdomain prefix and '/' (e.g. 'example.com/MyName')"
                .to_owned(),
        );
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_owned());
        }
        dns1123_subdomain(prefix).map_err(|problem| format!("prefix part {problem}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    if name.len() > QUALIFIED_NAME_MAX_LEN {
        return Err(format!("name part {}", too_long(QUALIFIED_NAME_MAX_LEN)));
    }
    if !is_qualified_shape(name) {
        return Err(QUALIFIED_NAME_RULE.to_owned());
    }
    Ok(())
}

pub(crate) fn label_value(text: &str) -> NameCheck {
    if text.len() > LABEL_VALUE_MAX_LEN {
        return Err(too_long(LABEL_VALUE_MAX_LEN));
    }
    if !text.is_empty() && !is_qualified_shape(text) {
        return Err(LABEL_VALUE_RULE.to_owned());
    }
    Ok(())
}

/// Port names: at most 15 of `[-a-z0-9]`, at least one letter, no `--`, no hyphen at either end.
pub(crate) fn iana_svc_name(text: &str) -> NameCheck {
    if text.len() > IANA_SVC_NAME_MAX_LEN {
        return Err(too_long(IANA_SVC_NAME_MAX_LEN));
    }
    if !text.bytes().all(|b| is_lower_alnum(b) || b == b'-') {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if text.contains("--") {
        return Err("must not contain consecutive hyphens".to_owned());
    }
    if !text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".to_owned());
    }
    if text.starts_with('-') || text.ends_with('-') {
        return Err("must not begin or end with a hyphen".to_owned());
    }
    Ok(())
}

/// Environment variable names: printable ASCII other than `=`.
pub(crate) fn env_var_name(text: &str) -> NameCheck {
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
    {
        return Err(
            "a valid environment variable name must consist only of printable ASCII \
            characters other than '='"
                .to_owned(),
        );
    }
    Ok(())
}

/// ConfigMap keys: `[-._a-zA-Z0-9]+`, not `.` or `..`, not starting with `..`.
pub(crate) fn config_key(text: &str) -> NameCheck {
    if text.len() > CONFIG_KEY_MAX_LEN {
        return Err(too_long(CONFIG_KEY_MAX_LEN));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if text.is_empty() || !text.bytes().all(allowed) {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                .to_owned(),
        );
    }
    if text == "." || text == ".." || text.starts_with("..") {
        return Err("must not be '.' or '..' or start with '..'".to_owned());
    }
    Ok(())
}
