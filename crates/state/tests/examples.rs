//! Every manifest shipped in `examples/` parses, defaults and validates: what the README tells a
//! newcomer to apply is accepted as written.

use std::path::PathBuf;

use flotilla_state::service::admit;

#[test]
fn every_example_is_accepted() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let objects = flotilla_state::parse_manifests(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!objects.is_empty(), "{} is empty", path.display());
        for object in objects {
            admit(object, "default").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "expected the shipped examples, found {checked} objects"
    );
}
