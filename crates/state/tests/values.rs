//! The value types users write in manifests: quantities, int-or-percent and RFC 3339 times.

use flotilla_state::objects::{IntOrString, Quantity, Time};

/// Parses `text` and checks its value in thousandths and in units (rounded up as Kubernetes does).
fn check_quantity(text: &str, milli: i64, value: i64) {
    let quantity = Quantity::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"));
    assert_eq!(
        (quantity.milli_value(), quantity.value()),
        (milli, value),
        "{text:?}"
    );
    assert_eq!(quantity.as_str(), text, "kept as written");
}

fn check_rejected(text: &str) {
    match Quantity::parse(text) {
        Ok(q) => panic!("{text:?} should be rejected, got {q:?}"),
        Err(error) => assert_eq!(error.to_string(), format!("{text:?} is not a quantity")),
    }
}

#[test]
fn quantities_parse_as_kubernetes_parses_them() {
    const GI: i64 = 1 << 30;
    let accepted: &[(&str, i64, i64)] = &[
        ("0", 0, 0),
        ("1", 1000, 1),
        ("500m", 500, 1),
        ("1m", 1, 1),
        ("100m", 100, 1),
        ("1500m", 1500, 2),
        ("1.5", 1500, 2),
        ("0.5", 500, 1),
        (".5", 500, 1),
        ("5.", 5000, 5),
        ("0.1m", 1, 1),
        ("+1", 1000, 1),
        ("-1", -1000, -1),
        ("-0.5", -500, -1),
        ("1k", 1_000_000, 1000),
        ("1M", 1_000_000_000, 1_000_000),
        ("2G", 2_000_000_000_000, 2_000_000_000),
        ("1T", 1_000_000_000_000_000, 1_000_000_000_000),
        ("1P", 1_000_000_000_000_000_000, 1_000_000_000_000_000),
        ("1E", i64::MAX, 1_000_000_000_000_000_000),
        ("1Ki", 1_024_000, 1024),
        ("1Mi", 1_048_576_000, 1 << 20),
        ("64Mi", 64 * 1_048_576_000, 64 << 20),
        ("1Gi", GI * 1000, GI),
        ("0.5Gi", GI * 500, GI / 2),
        ("0.25Gi", GI * 250, GI / 4),
        ("1.5Ki", 1_536_000, 1536),
        ("0.1Ki", 102_400, 103),
        ("1Ti", (1i64 << 40) * 1000, 1 << 40),
        ("7Ei", i64::MAX, 7i64 << 60),
        ("8Ei", i64::MAX, i64::MAX),
        ("1e3", 1_000_000, 1000),
        ("1E3", 1_000_000, 1000),
        ("1e+3", 1_000_000, 1000),
        ("1.5e-3", 2, 1),
        ("1e-3", 1, 1),
        ("12e0", 12_000, 12),
        ("0.000000001", 1, 1),
        ("00012", 12_000, 12),
        ("1.50", 1500, 2),
    ];
    assert!(accepted.len() >= 30);
    for &(text, milli, value) in accepted {
        check_quantity(text, milli, value);
    }
}

#[test]
fn malformed_quantities_are_rejected() {
    let rejected = [
        "", "12XB", "1.2.3", "Mi", "Ki", ".", "+", "-", "--1", "1e", "e3", "1E3.5", " 1", "1 ",
        "1ki", "1KI", "1Kib", "1mi", "0x10", "1_000", "1,5", "١", "1e99999", "m",
    ];
    for text in rejected {
        check_rejected(text);
    }
    let digits = "1".repeat(50);
    assert_eq!(
        Quantity::parse(&digits).unwrap_err().to_string(),
        format!("{digits:?} is too large a quantity")
    );
}

#[test]
fn quantities_compare_by_amount_and_print_as_written() {
    let q = |text: &str| Quantity::parse(text).unwrap();
    assert_eq!(q("1Gi"), q("1024Mi"));
    assert_eq!(q("1000m"), q("1"));
    assert_eq!(q("1e3"), q("1k"));
    assert_ne!(q("1k"), q("1Ki"));
    assert!(q("500m") < q("1"));
    assert!(q("-1") < q("0"));
    assert!(q("1E") < q("1Ei"));
    assert!(q("1e-100") > q("0"));
    assert!(q("0") < q("1e-100"));
    assert!(q("-1e-100") < q("0"));
    assert!(q("1e100") > q("999999999999999999999999999999999999"));
    assert!(q("-1e100") < q("-9"));
    assert_eq!(q("1.50").to_string(), "1.50");
    assert_eq!(Quantity::from_milli(250).as_str(), "250m");
    assert_eq!(Quantity::from_milli(2000).as_str(), "2");
    assert_eq!(Quantity::from_bytes(16 << 30).as_str(), "16Gi");
    assert_eq!(
        Quantity::from_bytes(1536).as_str(),
        "1536",
        "not a whole number of Ki"
    );
    assert_eq!(Quantity::from_bytes(3 << 10).as_str(), "3Ki");
    assert_eq!(Quantity::from_value(110).as_str(), "110");
}

#[test]
fn quantities_accept_bare_yaml_numbers() {
    let limits: std::collections::BTreeMap<String, Quantity> =
        serde_yaml::from_str("cpu: 0.5\nmemory: 1073741824\npods: 110\nsmall: 1.0e-3\n").unwrap();
    assert_eq!(limits["cpu"].milli_value(), 500);
    assert_eq!(limits["memory"].value(), 1 << 30);
    assert_eq!(limits["pods"].as_str(), "110");
    assert_eq!(limits["small"].milli_value(), 1);
    let back = serde_yaml::to_string(&limits).unwrap();
    assert!(
        back.contains("cpu: '0.5'"),
        "quantities serialise as strings: {back}"
    );
}

fn check_scaled(value: IntOrString, total: i32, round_up: bool, expected: Result<i32, &str>) {
    let result = value
        .scaled_value(total, round_up)
        .map_err(|e| e.to_string());
    assert_eq!(
        result,
        expected.map_err(str::to_owned),
        "{value} of {total}, round_up={round_up}"
    );
}

#[test]
fn int_or_percent_scales_like_max_surge_and_max_unavailable() {
    let s = |text: &str| IntOrString::String(text.to_owned());
    check_scaled(IntOrString::Int(3), 10, true, Ok(3));
    check_scaled(s("25%"), 10, true, Ok(3));
    check_scaled(s("25%"), 10, false, Ok(2));
    check_scaled(s("25%"), 4, false, Ok(1));
    check_scaled(s("50%"), 3, true, Ok(2));
    check_scaled(s("50%"), 3, false, Ok(1));
    check_scaled(s("0%"), 10, true, Ok(0));
    check_scaled(s("100%"), 7, false, Ok(7));
    check_scaled(s("1%"), 1, true, Ok(1));
    check_scaled(s("1%"), 1, false, Ok(0));
    check_scaled(s("-10%"), 15, true, Ok(-1));
    check_scaled(s("-10%"), 15, false, Ok(-2));
    check_scaled(s("25"), 10, true, Err("\"25\" is not a percentage"));
    check_scaled(s("%"), 10, true, Err("\"%\" is not a percentage"));
    check_scaled(s("abc%"), 10, true, Err("\"abc%\" is not a percentage"));
    check_scaled(s("2.5%"), 10, true, Err("\"2.5%\" is not a percentage"));
}

#[test]
fn int_or_string_keeps_its_yaml_shape() {
    let ports: Vec<IntOrString> = serde_yaml::from_str("[8080, http, \"8080\", 25%]").unwrap();
    assert_eq!(
        ports,
        [
            IntOrString::Int(8080),
            IntOrString::String("http".into()),
            IntOrString::String("8080".into()),
            IntOrString::String("25%".into()),
        ]
    );
    assert_eq!(
        serde_json::to_string(&ports).unwrap(),
        r#"[8080,"http","8080","25%"]"#
    );
    assert!(
        serde_yaml::from_str::<IntOrString>("4294967296").is_err(),
        "beyond 32 bits"
    );
}

fn check_time(text: &str, unix_ms: Option<i64>) {
    let parsed = Time::parse(text)
        .map(|t| t.unix_millis())
        .map_err(|e| e.to_string());
    let expected = unix_ms.ok_or(format!("{text:?} is not an RFC 3339 time"));
    assert_eq!(parsed, expected, "{text:?}");
}

#[test]
fn times_parse_rfc3339() {
    check_time("1970-01-01T00:00:00Z", Some(0));
    check_time("2024-05-01T12:00:00Z", Some(1_714_564_800_000));
    check_time("2024-05-01T12:00:00.25Z", Some(1_714_564_800_250));
    check_time("2024-05-01T12:00:00.123456789Z", Some(1_714_564_800_123));
    check_time("2024-05-01T14:00:00+02:00", Some(1_714_564_800_000));
    check_time("2024-05-01t12:00:00z", Some(1_714_564_800_000));
    check_time("2024-02-29T00:00:00Z", Some(1_709_164_800_000));
    check_time("1969-12-31T23:59:59Z", Some(-1000));
    check_time("0001-01-01T00:00:00Z", Some(-62_135_596_800_000));
    check_time("2023-02-29T00:00:00Z", None);
    check_time("2024-13-01T00:00:00Z", None);
    check_time("2024-05-01 12:00:00Z", None);
    check_time("2024-05-01T12:00:00", None);
    check_time("2024-05-01T24:00:00Z", None);
    check_time("2024-05-01T12:00:00.Z", None);
    check_time("2024-05-01T12:00:00+2:00", None);
    check_time("yesterday", None);
}

#[test]
fn times_format_and_order() {
    let t = Time::from_unix_millis(1_714_564_800_000);
    assert_eq!(t.as_str(), "2024-05-01T12:00:00Z");
    assert_eq!(
        Time::from_unix_millis(1_714_564_800_250).as_str(),
        "2024-05-01T12:00:00.250Z"
    );
    assert_eq!(
        Time::from_unix_millis(-1000).as_str(),
        "1969-12-31T23:59:59Z"
    );
    for unix_ms in [0, 951_782_400_000, 4_107_542_399_000, -62_135_596_800_000] {
        let time = Time::from_unix_millis(unix_ms);
        assert_eq!(
            Time::parse(time.as_str()).map(|t| t.unix_millis()),
            Ok(unix_ms),
            "{time}"
        );
    }
    let earlier = Time::parse("2024-05-01T14:00:00+03:00").unwrap();
    assert!(earlier < t, "ordered by instant, not text");
}
